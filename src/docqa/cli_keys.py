"""`docqa keys create|list|revoke`: API keys, managed directly in the configured database."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from docqa.cli_client import err, out

if TYPE_CHECKING:
    from docqa.db.engine import Database

keys_app = typer.Typer(
    help="Create, list and revoke API keys (used when DOCQA_AUTH=keys).", no_args_is_help=True
)
T = TypeVar("T")


def _run(action: Callable[[Database], Awaitable[T]]) -> T:
    # Imported here: every `docqa` run imports this module, and these take most of a second.
    from docqa.db import migrate
    from docqa.db.engine import open_database
    from docqa.errors import DocqaError
    from docqa.logs import configure_logging
    from docqa.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)

    async def run() -> T:
        db = await open_database(settings, pool_size=1)
        try:
            if settings.migrate_on_start:
                await asyncio.to_thread(migrate.upgrade, db.url)
            return await action(db)
        finally:
            await db.close()

    try:
        return asyncio.run(run())
    except DocqaError as exc:
        err().print(exc.detail, style="red", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what the key is for.")],
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="Add the key to this existing owner (their documents) instead of a new one; "
            "`local` is the owner of DOCQA_AUTH=off.",
        ),
    ] = None,
) -> None:
    """Create a key and print it once: only its hash is stored, so it cannot be shown again."""
    from docqa import auth

    new = _run(lambda db: auth.create_key(db, name=name, owner_id=owner))
    # The key alone on stdout, so that `KEY=$(docqa keys create --name ci)` works.
    typer.echo(new.secret)
    err().print(
        f"Created key {new.id} ('{new.name}') for owner {new.owner_id}. Store it now: it is "
        "shown only this once. Clients send it as `Authorization: Bearer <key>`.",
        soft_wrap=True,
    )


@keys_app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List keys: id, name, owner, the key's first characters, and when it was last used."""
    from docqa import auth

    keys = _run(lambda db: auth.list_keys(db, include_revoked=all_))
    rows = [
        (
            k.id,
            k.name,
            k.owner_id,
            k.owner_name,
            k.prefix + "…",
            f"{k.created_at:%Y-%m-%d %H:%M}",
            f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never",
            f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "",
        )
        for k in keys
    ]
    if not sys.stdout.isatty():  # piped: one tab-separated line per key, for scripts
        for row in rows:
            print("\t".join(row))
        return
    from rich.table import Table

    table = Table()
    for column in ("id", "name", "owner", "owner name", "starts with"):
        table.add_column(column, no_wrap=True)
    for column in ("created", "last used", "revoked"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    out().print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `docqa keys list`.")],
) -> None:
    """Revoke a key: its next request gets 401. The owner's documents are kept."""
    from docqa import auth

    _run(lambda db: auth.revoke_key(db, key_id))
    err().print(f"revoked {key_id}", markup=False)
