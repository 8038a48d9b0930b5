"""A private PostgreSQL server for the tests that run the run store on PostgreSQL
(``RAYLINE_DB_URL``): ``initdb`` into a temporary folder, ``postgres`` listening on a Unix
socket only (no TCP port), stopped at the end of the session. Each test gets a database of its
own (``new_database``).

It needs the server programs (Debian's ``postgresql`` package: ``initdb``, ``pg_ctl``); they are
looked for in ``$RAYLINE_PG_BIN``, ``/usr/lib/postgresql/*/bin`` and on ``PATH``. PostgreSQL
refuses to run as root, so as root the server runs as the ``postgres`` user (``runuser``).

Example::

    with PostgresServer.start() as pg:
        url = pg.new_database()          # postgresql+psycopg://postgres@/t_1a2b?host=/tmp/...
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "the run-store tests on PostgreSQL need the PostgreSQL server programs (initdb, pg_ctl): "
    "install Debian's `postgresql` package (`apt-get install postgresql`; .ci/run does) or set "
    "RAYLINE_PG_BIN to the folder that holds them"
)


def server_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``.

    Raises:
        RuntimeError: no PostgreSQL server programs here (the message says how to install them).
    """
    candidates = [os.environ.get("RAYLINE_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)
    found = shutil.which("initdb")
    candidates.append(str(Path(found).resolve().parent) if found else "")
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise RuntimeError(INSTALL_HINT)


def _major(folder: str) -> int:
    try:
        return int(Path(folder).parent.name)
    except ValueError:
        return 0


class PostgresServer:
    """One running server; ``stop`` (or leaving the ``with`` block) removes it and its files."""

    def __init__(self, root: Path, bin_dir: Path) -> None:
        self.root, self.bin = root, bin_dir
        self.data, self.socket_dir, self.log = root / "data", root / "sock", root / "server.log"

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = server_bin()
        root = Path(tempfile.mkdtemp(prefix="rayline-pg-"))
        root.chmod(0o755)  # the postgres user must reach its folders
        server = cls(root, bin_dir)
        server.socket_dir.mkdir()
        try:
            server._chown(root, server.socket_dir)
            server._as_server("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust",
                              "-E", "UTF8", "--no-sync")  # fmt: skip
            options = f"-k {server.socket_dir} -c listen_addresses='' -c fsync=off -c max_connections=200"
            server._as_server("pg_ctl", "-D", str(server.data), "-o", options, "-l", str(server.log),
                              "-w", "-t", "60", "start")  # fmt: skip
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return server

    def new_database(self) -> str:
        """Create an empty database; return its SQLAlchemy URL (psycopg 3 driver)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.socket_dir), user="postgres", dbname="postgres",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@/{name}?host={self.socket_dir}"

    def stop(self) -> None:
        try:
            self._as_server("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # --------------------------------------------------------------------------- internals
    def _runs_as_root(self) -> bool:
        return os.geteuid() == 0

    def _chown(self, *paths: Path) -> None:
        if self._runs_as_root():
            user = pwd.getpwnam("postgres")
            for p in paths:
                os.chown(p, user.pw_uid, user.pw_gid)

    def _as_server(self, program: str, *args: str) -> None:
        cmd = [str(self.bin / program), *args]
        if self._runs_as_root():
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}{log}")
