"""Settings, read once from the environment.

``LEDGER_DATABASE_URL`` picks the event store: a ``postgresql://`` DSN selects PostgreSQL (psycopg 3, pooled);
a path or ``sqlite:///path`` selects SQLite; unset means ``ledger.sqlite`` in the working directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SQLITE_FILE = "ledger.sqlite"


@dataclass(frozen=True)
class Database:
    url: str

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///") if self.url.startswith("sqlite:///") else self.url

    def display(self) -> str:
        """The URL with any password masked."""
        if not self.is_postgres:
            return f"sqlite:///{self.sqlite_path}"
        info = self.conninfo()
        host = info.get("host", "localhost")
        return f"postgresql://{info.get('user', '')}@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def conninfo(self) -> dict[str, Any]:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(self.url)

    def eventsourcing_env(self, pool_size: int = 10) -> dict[str, str]:
        """The environment the eventsourcing library reads to construct its recorders."""
        if self.is_postgres:
            info = self.conninfo()
            env = {
                "PERSISTENCE_MODULE": "eventsourcing.postgres",
                "POSTGRES_DBNAME": str(info.get("dbname", "")),
                "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
                "POSTGRES_PORT": str(info.get("port", "5432")),
                "POSTGRES_USER": str(info.get("user", "")),
                "POSTGRES_PASSWORD": str(info.get("password", "")),
                "POSTGRES_POOL_SIZE": str(pool_size),
                "POSTGRES_MAX_OVERFLOW": str(pool_size),
                "POSTGRES_CONNECT_TIMEOUT": "5",
                "POSTGRES_PRE_PING": "y",
                "POSTGRES_LOCK_TIMEOUT": "10",
                "APPLICATION_RECORDER_TOPIC": "ledger.recorders:ChainedPostgresApplicationRecorder",
            }
        else:
            path = Path(self.sqlite_path)
            if path.parent != Path(""):
                path.parent.mkdir(parents=True, exist_ok=True)
            env = {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(path),
                "SQLITE_LOCK_TIMEOUT": "10",
                "APPLICATION_RECORDER_TOPIC": "ledger.recorders:ChainedSQLiteApplicationRecorder",
            }
        env["CREATE_TABLE"] = "y"
        return env


@dataclass(frozen=True)
class Settings:
    database: Database = field(default_factory=lambda: Database(DEFAULT_SQLITE_FILE))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        environ = dict(os.environ if environ is None else environ)
        return cls(database=Database(environ.get("LEDGER_DATABASE_URL") or DEFAULT_SQLITE_FILE))
