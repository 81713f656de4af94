"""`docqa db upgrade`: the embedded database's PostgreSQL version, moved to the newest bundled one.

Only typer is imported at the top: `docqa --help` and every other command stay quick.
"""

from __future__ import annotations

import typer

db_app = typer.Typer(help="The embedded database.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade() -> None:
    """Move the embedded database (DATA_DIR/pg) to the newest bundled PostgreSQL (18).

    Stop every docqa process on the data directory first. The old directory is kept beside the
    new one (pg.pg16-backup) until you remove it.
    """
    from rich.console import Console

    from docqa.db.engine import EMBEDDED_PG_VERSION
    from docqa.db.upgrade import UpgradeError, upgrade_embedded
    from docqa.logs import configure_logging
    from docqa.settings import Settings

    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    if settings.database_url:
        err.print(
            "DOCQA_DATABASE_URL is set, so docqa does not run the database: upgrade that server "
            "with its own tools (pg_upgrade, or your provider's upgrade).",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        result = upgrade_embedded(settings.pg_dir)
    except UpgradeError as exc:
        err.print(str(exc), markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if result.backup is None:
        out.print(f"The embedded database is already PostgreSQL {EMBEDDED_PG_VERSION}.")
        return
    out.print(
        f"Upgraded the embedded database from PostgreSQL {result.from_version} to "
        f"{result.to_version} in {result.seconds:.1f} s. The old directory is kept at "
        f"{result.backup}; remove it once docqa runs well.",
        markup=False,
        soft_wrap=True,
    )
