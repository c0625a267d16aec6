"""A throwaway PostgreSQL server for the test session: a temporary data dir, a free loopback port.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the ``postgres`` user.
Set ``LEDGER_TEST_POSTGRES_URL`` to use an existing server instead (a DSN to a database the tests may use
to create and drop their own databases).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise RuntimeError(f"PostgreSQL's {name} was not found; install PostgreSQL (apt-get install -y postgresql)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


TEST_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "300",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
}


@dataclass
class PostgresServer:
    """A running server; ``admin_url`` points at its maintenance database."""

    admin_url: str
    data_dir: Path | None = None

    def url_for(self, dbname: str) -> str:
        info = psycopg.conninfo.conninfo_to_dict(self.admin_url)
        info["dbname"] = dbname
        return "postgresql://{user}@{host}:{port}/{dbname}".format(**{"user": "postgres", **info})

    def create_database(self, dbname: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        return self.url_for(dbname)

    def drop_database(self, dbname: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl against this server's data dir (e.g. ``restart``, ``stop -m fast``)."""
        assert self.data_dir is not None, "not a server these tests started"
        # A (re)started server inherits pg_ctl's stdout/stderr unless it logs to a file: without -l, waiting
        # for pg_ctl's output would wait for the server to exit.
        log = ["-l", str(self.data_dir.parent / "server.log")] if args and args[0] in ("start", "restart") else []
        subprocess.run(
            _as_server_user([_binary("pg_ctl"), "-D", str(self.data_dir), "-w", *args, *log]),
            check=True,
            capture_output=True,
        )

    @classmethod
    def start(cls, **settings: str) -> PostgresServer:
        """Start a server; ``settings`` override the defaults (e.g. ``fsync="on", shared_buffers="2GB"``).

        The defaults suit tests (no fsync): benchmarks of durable commands pass ``fsync="on"``.
        """
        url = os.environ.get("LEDGER_TEST_POSTGRES_URL")
        if url:
            return cls(admin_url=url)
        root = Path(tempfile.mkdtemp(prefix="ledger-pg-"))
        data_dir, socket_dir = root / "data", root / "socket"
        socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
            shutil.chown(socket_dir, "postgres", "postgres")
        subprocess.run(
            _as_server_user([_binary("initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        port = _free_port()
        chosen = {**TEST_SETTINGS, **settings}
        options = f"-p {port} -k {socket_dir} " + " ".join(f"-c {name}={value}" for name, value in chosen.items())
        subprocess.run(
            _as_server_user(
                [_binary("pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(root / "server.log"), "-w", "start"]
            ),
            check=True,
            capture_output=True,
        )
        server = cls(admin_url=f"postgresql://postgres@127.0.0.1:{port}/postgres", data_dir=data_dir)
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(server.admin_url).close()
                return server
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.data_dir is None:
            return
        subprocess.run(
            _as_server_user([_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)
