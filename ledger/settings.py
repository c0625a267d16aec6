"""Settings, read once from the environment.

``LEDGER_DATABASE_URL`` picks the event store: a ``postgresql://`` DSN selects PostgreSQL (psycopg 3, pooled);
a path or ``sqlite:///path`` selects SQLite; unset means ``ledger.sqlite`` in the working directory.

``LEDGER_AUTH`` turns API authentication on (the default) or off (``off``, ``false``, ``0`` or ``no``: open
mode, where anyone may do anything and ``X-Actor`` names the actor; for local development only).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ledger.errors import ValidationError

N = TypeVar("N", int, float)

DEFAULT_SQLITE_FILE = "ledger.sqlite"
DEFAULT_MODELS_DIR = "models"
AGGREGATE_CACHE_SIZE = 512
FALSE_WORDS = ("off", "false", "0", "no")
_LIBPQ_KEYWORDS = re.compile(r"(?:^|\s)(?:host|hostaddr|dbname|user|password|port|sslmode)\s*=")


@dataclass(frozen=True)
class Database:
    url: str

    def __post_init__(self) -> None:
        if "://" in self.url and not self.is_postgres and not self.url.startswith("sqlite:///"):
            raise ValidationError(f"the database must be a postgresql:// URL, sqlite:///path or a file path "
                                  f"(got {self.url.partition('://')[0]}://…)", field="database")
        if not self.is_postgres and _LIBPQ_KEYWORDS.search(self.url):  # else a file named after it, password and all
            raise ValidationError("the database must be a postgresql:// URL, sqlite:///path or a file path (a "
                                  "libpq keyword string such as 'host=… dbname=…' is not one)", field="database")
        if not self.is_postgres and (not self.sqlite_path.strip() or self.sqlite_path != self.sqlite_path.strip()
                                     or ":memory:" in self.sqlite_path or "?" in self.sqlite_path):
            raise ValidationError(f"the SQLite database must be a plain file path: no ':memory:' (nothing written "
                                  f"there would last), '?query' or spaces around it (got {self.url!r})",
                                  field="database")
        if self.is_postgres:
            try:
                ports = str(self.conninfo().get("port") or "5432").split(",")
            except Exception as error:  # psycopg.ProgrammingError: what waiting will never change
                raise ValidationError(f"the database URL cannot be read: {str(error).splitlines()[0]}",
                                      field="database") from None
            if not all(port.strip().isdigit() and 0 < int(port) < 65536 for port in ports):
                raise ValidationError(f"the database URL's port must be a number from 1 to 65535 (got "
                                      f"{','.join(ports)[:40]!r})", field="database")

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith(("postgresql://", "postgres://"))

    @property
    def sqlite_path(self) -> str:
        return self.url.removeprefix("sqlite:///")

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

    def eventsourcing_env(self, pool_size: int = 10, *, create: bool = True) -> dict[str, str]:
        """The environment the eventsourcing library reads to construct its recorders; ``create``: make the
        tables (and an SQLite file's directory) if missing."""
        if self.is_postgres:
            info = self.conninfo()
            env = {
                "PERSISTENCE_MODULE": "ledger.recorders:LedgerPostgresFactory",
                "POSTGRES_DBNAME": str(info.get("dbname", "")),
                "POSTGRES_HOST": str(info.get("host", "127.0.0.1")),
                "POSTGRES_PORT": str(info.get("port", "5432")),
                "POSTGRES_USER": str(info.get("user", "")),
                "POSTGRES_PASSWORD": str(info.get("password", "")),
                "POSTGRES_POOL_SIZE": str(pool_size),
                "POSTGRES_MAX_OVERFLOW": str(pool_size),
                # How long a request waits for a pooled connection before the API answers 503.
                "POSTGRES_CONNECT_TIMEOUT": "3",
                "POSTGRES_PRE_PING": "y",
                # How long a save waits for the events table's lock before it fails (503); see ledger.write_path.
                "POSTGRES_LOCK_TIMEOUT": "5",
                "APPLICATION_RECORDER_TOPIC": "ledger.recorders:ChainedPostgresApplicationRecorder",
                # the URL's other parameters (sslmode, sslrootcert, application_name…), which the library drops
                "LEDGER_POSTGRES_CONNINFO": json.dumps({key: value for key, value in info.items() if key not in (
                    "dbname", "host", "port", "user", "password")}),
            }
        else:
            path = Path(self.sqlite_path)
            if create and path.parent != Path(""):
                path.parent.mkdir(parents=True, exist_ok=True)
            env = {
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(path),
                "SQLITE_LOCK_TIMEOUT": "10",
                "APPLICATION_RECORDER_TOPIC": "ledger.recorders:ChainedSQLiteApplicationRecorder",
            }
        env["CREATE_TABLE"] = "y" if create else "n"
        # Keep recently used aggregates in memory and fast-forward them with the events stored since (read from
        # the database on every load, so other processes' writes are seen): a command no longer replays a
        # long stream from its first event.
        env["AGGREGATE_CACHE_MAXSIZE"] = str(AGGREGATE_CACHE_SIZE)
        env["AGGREGATE_CACHE_FASTFORWARD"] = "y"
        return env


@dataclass(frozen=True)
class Settings:
    database: Database = field(default_factory=lambda: Database(DEFAULT_SQLITE_FILE))
    auth: bool = True
    """Whether the API asks for a bearer token (``LEDGER_AUTH=off`` turns it off)."""
    models_dir: str = DEFAULT_MODELS_DIR
    """Where ``ledger models fetch`` and ``ledger sae train`` put what they make (``LEDGER_MODELS_DIR``)."""
    model: str | None = None
    """A Hugging Face causal-LM directory to generate with (``LEDGER_MODEL``); None: no model is loaded."""
    sae: str | None = None
    """An SAE directory in the SAELens format (``LEDGER_SAE``)."""
    device: str | None = None
    """``cuda``, ``cpu``…; default: CUDA when present (``LEDGER_DEVICE``)."""
    dtype: str | None = None
    """``float32``, ``bfloat16``, ``float16``; default: float32 (``LEDGER_DTYPE``)."""
    max_batch: int = 32
    """The most generation requests decoded together in one step (``LEDGER_MAX_BATCH``)."""
    max_queue: int = 128
    """The most generation requests waiting for a place; more are refused with 503 (``LEDGER_MAX_QUEUE``)."""
    step_tokens: int = 512
    """Prompt and generated tokens one forward step may run (``LEDGER_STEP_TOKENS``)."""
    generation_grace: float = 6.0
    """At shutdown, seconds running generations may still take before they are cut short (``LEDGER_GENERATION_GRACE``;
    at most 8: the server's own grace is 10)."""
    inline_projections: bool = True
    """Whether a server writes the read models in the transaction that records the events
    (``LEDGER_INLINE_PROJECTIONS=off``: only the asynchronous workers do, and commands wait for them)."""
    allowed_hosts: tuple[str, ...] | None = None
    """Host names requests may be addressed to besides ``localhost`` and IP addresses (``LEDGER_ALLOWED_HOSTS``,
    comma-separated; ``*``: any). Unset: any host when tokens are asked for; in open mode only ``localhost`` and
    IP addresses, so a page of another site cannot reach an open server through a name it rebinds to it."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        environ = dict(os.environ if environ is None else environ)
        return cls(
            database=Database(environ.get("LEDGER_DATABASE_URL") or DEFAULT_SQLITE_FILE),
            auth=parse_switch(environ.get("LEDGER_AUTH"), default=True),
            models_dir=environ.get("LEDGER_MODELS_DIR") or DEFAULT_MODELS_DIR,
            model=environ.get("LEDGER_MODEL") or None,
            sae=environ.get("LEDGER_SAE") or None,
            device=environ.get("LEDGER_DEVICE") or None,
            dtype=environ.get("LEDGER_DTYPE") or None,
            max_batch=number_setting(environ, "LEDGER_MAX_BATCH", cls.max_batch, minimum=1),
            max_queue=number_setting(environ, "LEDGER_MAX_QUEUE", cls.max_queue, minimum=0),
            step_tokens=number_setting(environ, "LEDGER_STEP_TOKENS", cls.step_tokens, minimum=1),
            generation_grace=number_setting(environ, "LEDGER_GENERATION_GRACE", cls.generation_grace,
                                            minimum=0.0),
            inline_projections=parse_switch(environ.get("LEDGER_INLINE_PROJECTIONS"), default=True),
            allowed_hosts=_names(environ.get("LEDGER_ALLOWED_HOSTS")),
        )

    def host_allowlist(self, auth: bool) -> frozenset[str] | None:
        """The host names (lower case) requests may name besides ``localhost`` and IP addresses, on a server that
        asks for tokens (``auth``) or not; None: any."""
        if self.allowed_hosts is None:
            return None if auth else frozenset()
        return None if "*" in self.allowed_hosts else frozenset(name.lower() for name in self.allowed_hosts)


def number_setting(environ: Mapping[str, str], name: str, default: N, minimum: N) -> N:
    """A number setting of ``default``'s type (int or float), at least ``minimum``; an unreadable, infinite or
    NaN, or too small value is reported on the log and the default used (never read as no bound)."""
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = type(default)(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < minimum:
        kind = "an integer" if isinstance(default, int) else "a number"
        logging.getLogger("ledger").warning("%s=%r is not %s >= %s; using %s", name, raw, kind, minimum, default)
        return default
    return value


def parse_switch(value: str | None, *, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() not in FALSE_WORDS


def _names(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated list (spaces ignored); None when unset or empty."""
    names = tuple(name.strip() for name in (value or "").split(",") if name.strip())
    return names or None
