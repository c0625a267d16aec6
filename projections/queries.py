"""The read side's query facade: answers from the read-model tables (PostgreSQL or SQLite), never the log.

Listings are keyset-paginated with opaque cursors; a cursor from another listing or an altered one raises
:class:`~projections.errors.InvalidCursorError` (a ``ValueError``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from eventsourcing.persistence import PersistenceError

from ledger.settings import Database
from ledger.values import name_key
from projections import cursors
from projections.errors import InvalidCursorError, InvalidQueryError
from projections.fields import search_text
from projections.registry import PROJECTION_NAMES
from projections.rows import (
    ActiveRow,
    AuditRow,
    ExecutionRow,
    ExecutionSpec,
    Page,
    ProfileRow,
    RunProfile,
    VersionRow,
)
from projections.log import EventLog
from projections.store import ReadModelStore, open_store

MAX_LIMIT = 1000
PROFILE_SORTS = ("name", "updated_at")

_PROFILE_COLUMNS = (
    "id, name, name_key, description, model_id, sae_id, layer, steering, feature_count, tags, products, metadata, "
    "version, is_active, pinned_version, execution_count, last_executed_at, created_at, updated_at"
)
_VERSION_COLUMNS = (
    "profile_id, version, name, description, model_id, sae_id, layer, steering, feature_count, tags, products, "
    "metadata, event_type, actor, reason, correlation_id, recorded_at"
)
_EXECUTION_COLUMNS = (
    "id, position, profile_id, profile_version, run_id, seed, entity_count, status, error_message, duration_ms, "
    "metadata, kind, details, replay_of, actor, reason, correlation_id, recorded_at"
)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQueryError(f"limit must be an integer from 1 to {MAX_LIMIT} (got {limit!r})")
    return limit


def _uuid(value: UUID | str) -> UUID | None:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _like_pattern(text: str) -> str:
    escaped = search_text(text).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ReadModel:
    """Queries over the read models of one database; it never writes (``projections.schema`` creates the
    tables). The composition root gives it the process's store (the application's pool) and log reader; without
    them it opens its own (closed with it)."""

    def __init__(
        self, database: Database | str, *, pool_size: int = 4, store: ReadModelStore | None = None,
        log: EventLog | None = None,
    ) -> None:
        self.database = database if isinstance(database, Database) else Database(database)
        self._owned = (store is None, log is None)
        self.store = store or open_store(self.database, pool_size=pool_size)
        self.log = log or EventLog(self.database, pool_size=1)
        self.dialect = self.store.dialect

    def close(self) -> None:
        owns_store, owns_log = self._owned
        if owns_log:
            self.log.close()
        if owns_store:
            self.store.datastore.close()

    # -- plumbing -------------------------------------------------------------------------------------
    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        with self.store.datastore.transaction(commit=False) as curs:
            yield curs

    def _all(self, sql: str, params: dict[str, Any] | None = None, *, setup: Sequence[str] = ()) -> list[Any]:
        for name, value in (params or {}).items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(item, str) and "\x00" in item for item in values):
                raise InvalidQueryError(f"{name} must not contain NUL characters")
        with self._cursor() as curs:
            for statement in setup:
                curs.execute(statement)
            curs.execute(self.dialect.compile(sql), self.dialect.parameters(params or {}))
            return list(curs.fetchall())

    def _one(self, sql: str, params: dict[str, Any] | None = None) -> Any | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    # -- profiles -------------------------------------------------------------------------------------
    def list_profiles(
        self,
        tags: Sequence[str] | None = None,
        tags_match: Literal["any", "all"] = "any",
        product: str | None = None,
        search: str | None = None,
        sort: Literal["name", "updated_at"] = "name",
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[ProfileRow]:
        """Live profiles, filtered by tags (any/all of them), product and text in the name or description.

        ``sort="name"`` is case-insensitive A→Z; ``sort="updated_at"`` is most recently updated first.
        """
        limit = _limit(limit)
        if sort not in PROFILE_SORTS:
            raise InvalidQueryError(f"sort must be one of {', '.join(PROFILE_SORTS)} (got {sort!r})")
        if tags_match not in ("any", "all"):
            raise InvalidQueryError(f"tags_match must be 'any' or 'all' (got {tags_match!r})")
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit + 1}
        tags = [tag.strip() for tag in (tags or []) if tag and tag.strip()]
        if tags:
            where.append(self._labels_filter("tags", tags, tags_match, params))
        if product:
            where.append(self._labels_filter("products", [product.strip()], "all", params))
        if search and search.strip():
            params["pattern"] = _like_pattern(search.strip())
            where.append("(name_search LIKE :pattern ESCAPE '\\' OR description_search LIKE :pattern ESCAPE '\\')")
        listing = f"profiles:{sort}"
        if sort == "name":
            order = "name_key, id"
            if cursor is not None:
                params["k0"], params["k1"] = cursors.decode(cursor, listing, (str, str))
                where.append("(name_key, id) > (:k0, :k1)")
        else:
            order = "updated_at DESC, id DESC"
            if cursor is not None:
                at, identity = cursors.decode(cursor, listing, (str, str))
                params["k0"], params["k1"] = self._time_param(at), identity
                where.append("(updated_at, id) < (:k0, :k1)")
        if "k1" in params:
            params["k1"] = self._uuid_param(params["k1"])
        sql = f"SELECT {_PROFILE_COLUMNS} FROM profiles"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order} LIMIT :limit"
        # The planner cannot estimate substring matches; walking the sort index and filtering can then read
        # most of the table. With a search term, the trigram (and label) bitmaps are always the better plan.
        searching = self.dialect.is_postgres and "pattern" in params and self.store.has_trigram
        rows = self._all(sql, params, setup=("SET LOCAL enable_indexscan = off",) if searching else ())
        items = [self._profile_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last_row, last = rows[limit - 1], items[-1]
            if sort == "name":
                key = [last_row["name_key"], str(last.id)]
            else:
                key = [last.updated_at.isoformat(), str(last.id)]
            next_cursor = cursors.encode(listing, key)
        return Page(items=tuple(items), next_cursor=next_cursor)

    def get_profile(self, profile_id: UUID | str) -> ProfileRow | None:
        identity = _uuid(profile_id)
        if identity is None:
            return None
        row = self._one(f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE id = :id", {"id": identity})
        return self._profile_row(row) if row else None

    def get_profile_by_name(self, name: str) -> ProfileRow | None:
        """By name as names are compared: trimmed, inner whitespace collapsed, case-insensitive."""
        row = self._one(
            f"SELECT {_PROFILE_COLUMNS} FROM profiles WHERE name_key = :key ORDER BY id LIMIT 1",
            {"key": name_key(name)},
        )
        return self._profile_row(row) if row else None

    def active_profile(self) -> ActiveRow | None:
        row = self._one(
            "SELECT a.profile_id, p.name, a.pinned_version, a.version, a.activated_at, a.actor, a.reason "
            "FROM active_profile a LEFT JOIN profiles p ON p.id = a.profile_id WHERE a.slot = 1"
        )
        if row is None:
            return None
        return ActiveRow(
            profile_id=self.dialect.read_uuid(row["profile_id"]),
            name=row["name"],
            pinned_version=row["pinned_version"],
            version=row["version"],
            activated_at=self.dialect.read_time(row["activated_at"]),
            actor=row["actor"],
            reason=row["reason"],
        )

    # -- versions -------------------------------------------------------------------------------------
    def list_versions(self, profile_id: UUID | str, limit: int = 50, cursor: str | None = None) -> Page[VersionRow]:
        """A profile's versions, oldest first (deleted profiles keep theirs)."""
        limit = _limit(limit)
        identity = _uuid(profile_id)
        if identity is None:
            return Page(items=(), next_cursor=None)
        listing = f"versions:{identity}"
        params: dict[str, Any] = {"id": identity, "limit": limit + 1, "after": 0}
        if cursor is not None:
            (params["after"],) = cursors.decode(cursor, listing, (int,))
        rows = self._all(
            f"SELECT {_VERSION_COLUMNS} FROM profile_versions WHERE profile_id = :id AND version > :after "
            "ORDER BY version LIMIT :limit",
            params,
        )
        items = [self._version_row(row) for row in rows[:limit]]
        next_cursor = cursors.encode(listing, [items[-1].version]) if len(rows) > limit else None
        return Page(items=tuple(items), next_cursor=next_cursor)

    def get_version(self, profile_id: UUID | str, version: int) -> VersionRow | None:
        identity = _uuid(profile_id)
        if identity is None:
            return None
        row = self._one(
            f"SELECT {_VERSION_COLUMNS} FROM profile_versions WHERE profile_id = :id AND version = :version",
            {"id": identity, "version": version},
        )
        return self._version_row(row) if row else None

    # -- executions -----------------------------------------------------------------------------------
    def list_executions(
        self,
        profile_id: UUID | str | None = None,
        run_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[ExecutionRow]:
        """Executions, newest first; of one profile and/or one run id."""
        limit = _limit(limit)
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit + 1}
        if profile_id is not None:
            identity = _uuid(profile_id)
            if identity is None:
                return Page(items=(), next_cursor=None)
            params["profile_id"] = identity
            where.append("profile_id = :profile_id")
        if run_id is not None:
            params["run_id"] = run_id
            where.append("run_id = :run_id")
        listing = f"executions:{params.get('profile_id')}:{run_id}"
        if cursor is not None:
            (params["before"],) = cursors.decode(cursor, listing, (int,))
            where.append("position < :before")
        sql = f"SELECT {_EXECUTION_COLUMNS} FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._all(sql + " ORDER BY position DESC LIMIT :limit", params)
        items = [self._execution_row(row) for row in rows[:limit]]
        next_cursor = cursors.encode(listing, [items[-1].position]) if len(rows) > limit else None
        return Page(items=tuple(items), next_cursor=next_cursor)

    def get_execution(self, execution_id: UUID | str) -> ExecutionRow | None:
        identity = _uuid(execution_id)
        if identity is None:
            return None
        row = self._one(f"SELECT {_EXECUTION_COLUMNS} FROM executions WHERE id = :id", {"id": identity})
        return self._execution_row(row) if row else None

    def execution_spec(self, execution_id: UUID | str) -> ExecutionSpec | None:
        """The exact spec (of the profile version it ran) and the inputs needed to run an execution again."""
        identity = _uuid(execution_id)
        if identity is None:
            return None
        row = self._one(
            "SELECT e.id, e.profile_id, e.profile_version, v.model_id, v.sae_id, v.layer, v.steering, e.seed, "
            "e.entity_count, e.run_id, e.kind, e.details, e.metadata "
            "FROM executions e JOIN profile_versions v ON v.profile_id = e.profile_id "
            "AND v.version = e.profile_version WHERE e.id = :id",
            {"id": identity},
        )
        if row is None:
            return None
        read = self.dialect
        return ExecutionSpec(
            execution_id=read.read_uuid(row["id"]),
            profile_id=read.read_uuid(row["profile_id"]),
            profile_version=row["profile_version"],
            model_id=row["model_id"],
            sae_id=row["sae_id"],
            layer=row["layer"],
            steering=read.read_json(row["steering"]),
            seed=row["seed"],
            entity_count=row["entity_count"],
            run_id=row["run_id"],
            kind=row["kind"],
            details=read.read_json(row["details"]),
            metadata=read.read_json(row["metadata"]),
        )

    def profile_for_run(self, run_id: str) -> RunProfile | None:
        """The profile version a run (e.g. a cohort generation) used: its latest execution with that run id."""
        row = self._one(
            "SELECT id, profile_id, profile_version, recorded_at FROM executions WHERE run_id = :run_id "
            "ORDER BY position DESC LIMIT 1",
            {"run_id": run_id},
        )
        if row is None:
            return None
        return RunProfile(
            run_id=run_id,
            profile_id=self.dialect.read_uuid(row["profile_id"]),
            profile_version=row["profile_version"],
            execution_id=self.dialect.read_uuid(row["id"]),
            recorded_at=self.dialect.read_time(row["recorded_at"]),
        )

    # -- audit ----------------------------------------------------------------------------------------
    def events(
        self,
        profile_id: UUID | str | None = None,
        actor: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_position: int | None = None,
        up_to_position: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditRow]:
        """The event timeline in log order. ``since`` is inclusive, ``until`` exclusive; ``after_position``
        exclusive, ``up_to_position`` inclusive. ``event_type`` is like ``"Profile.Created"``."""
        limit = _limit(limit)
        where: list[str] = []
        params: dict[str, Any] = {"limit": limit + 1}
        if profile_id is not None:
            identity = _uuid(profile_id)
            if identity is None:
                return Page(items=(), next_cursor=None)
            params["profile_id"] = identity
            where.append("profile_id = :profile_id")
        for column, value, operator in (("actor", actor, "="), ("event_type", event_type, "=")):
            if value is not None:
                params[column] = value
                where.append(f"{column} {operator} :{column}")
        if since is not None:
            params["since"] = since
            where.append("recorded_at >= :since")
        if until is not None:
            params["until"] = until
            where.append("recorded_at < :until")
        after = after_position or 0
        if cursor is not None:
            (from_cursor,) = cursors.decode(cursor, "events", (int,))
            after = max(after, from_cursor)
        params["after"] = after
        where.append("position > :after")
        if up_to_position is not None:
            params["up_to"] = up_to_position
            where.append("position <= :up_to")
        rows = self._all(
            "SELECT position, recorded_at, actor, event_type, aggregate_type, originator_id, originator_version, "
            "profile_id, reason, correlation_id, payload FROM audit_events WHERE "
            + " AND ".join(where)
            + " ORDER BY position LIMIT :limit",
            params,
        )
        items = [self._audit_row(row) for row in rows[:limit]]
        next_cursor = cursors.encode("events", [items[-1].position]) if len(rows) > limit else None
        return Page(items=tuple(items), next_cursor=next_cursor)

    # -- progress -------------------------------------------------------------------------------------
    def positions(self) -> dict[str, int]:
        """The log position each read model has applied."""
        return self.store.positions(PROJECTION_NAMES)

    def log_position(self) -> int:
        """The last position recorded in the event log (0 when empty)."""
        return self.log.head()

    def wait_for_position(self, position: int | None, timeout: float = 5.0) -> bool:
        """True once every read model has applied ``position``; False if that takes longer than ``timeout``."""
        if position is None:
            return True
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            try:
                if min(self.positions().values()) >= position:
                    return True
            except PersistenceError:  # e.g. the database restarting: keep waiting until the deadline
                if time.monotonic() >= deadline:
                    raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)

    # -- rows -----------------------------------------------------------------------------------------
    def _labels_filter(self, column: str, labels: list[str], match: str, params: dict[str, Any]) -> str:
        if self.dialect.is_postgres:
            params[column] = labels
            return f"{column} {'@>' if match == 'all' else '&&'} :{column}"
        names = []
        for number, label in enumerate(labels):
            params[f"{column}{number}"] = label
            names.append(f":{column}{number}")
        members = f"SELECT value FROM json_each(profiles.{column}) WHERE value IN ({', '.join(names)})"
        if match == "all":
            params[f"{column}_count"] = len(set(labels))
            return f"(SELECT COUNT(DISTINCT value) FROM ({members})) = :{column}_count"
        return f"EXISTS ({members})"

    def _time_param(self, text: str) -> Any:
        try:
            return self.dialect.adapt(datetime.fromisoformat(text))
        except ValueError:
            raise InvalidCursorError("invalid cursor: malformed position") from None

    def _uuid_param(self, text: str) -> Any:
        identity = _uuid(text)
        if identity is None:
            raise InvalidCursorError("invalid cursor: malformed position")
        return self.dialect.adapt(identity)

    def _content(self, row: Any) -> dict[str, Any]:
        """The fields a profile and each of its versions share: spec and descriptive fields."""
        read = self.dialect
        return {
            "name": row["name"],
            "description": row["description"],
            "model_id": row["model_id"],
            "sae_id": row["sae_id"],
            "layer": row["layer"],
            "steering": read.read_json(row["steering"]),
            "feature_count": row["feature_count"],
            "tags": read.read_labels(row["tags"]),
            "products": read.read_labels(row["products"]),
            "metadata": read.read_json(row["metadata"]),
        }

    def _profile_row(self, row: Any) -> ProfileRow:
        read = self.dialect
        return ProfileRow(
            id=read.read_uuid(row["id"]),
            **self._content(row),
            version=row["version"],
            is_active=bool(row["is_active"]),
            pinned_version=row["pinned_version"],
            execution_count=row["execution_count"],
            last_executed_at=read.read_time(row["last_executed_at"]),
            created_at=read.read_time(row["created_at"]),
            updated_at=read.read_time(row["updated_at"]),
        )

    def _version_row(self, row: Any) -> VersionRow:
        read = self.dialect
        return VersionRow(
            profile_id=read.read_uuid(row["profile_id"]),
            version=row["version"],
            **self._content(row),
            event_type=row["event_type"],
            actor=row["actor"],
            reason=row["reason"],
            correlation_id=row["correlation_id"],
            recorded_at=read.read_time(row["recorded_at"]),
        )

    def _execution_row(self, row: Any) -> ExecutionRow:
        read = self.dialect
        return ExecutionRow(
            id=read.read_uuid(row["id"]),
            position=row["position"],
            profile_id=read.read_uuid(row["profile_id"]),
            profile_version=row["profile_version"],
            run_id=row["run_id"],
            seed=row["seed"],
            entity_count=row["entity_count"],
            status=row["status"],
            error_message=row["error_message"],
            duration_ms=row["duration_ms"],
            metadata=read.read_json(row["metadata"]),
            kind=row["kind"],
            details=read.read_json(row["details"]),
            replay_of=read.read_uuid(row["replay_of"]),
            actor=row["actor"],
            reason=row["reason"],
            correlation_id=row["correlation_id"],
            recorded_at=read.read_time(row["recorded_at"]),
        )

    def _audit_row(self, row: Any) -> AuditRow:
        read = self.dialect
        return AuditRow(
            position=row["position"],
            recorded_at=read.read_time(row["recorded_at"]),
            actor=row["actor"],
            event_type=row["event_type"],
            aggregate_type=row["aggregate_type"],
            originator_id=read.read_uuid(row["originator_id"]),
            originator_version=row["originator_version"],
            profile_id=read.read_uuid(row["profile_id"]),
            reason=row["reason"],
            correlation_id=row["correlation_id"],
            payload=read.read_json(row["payload"]),
        )
