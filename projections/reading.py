"""What every read model's queries share: one read-only transaction per query (or one for several, in
:meth:`Queries.snapshot`), rows converted to their type, and the checks of the arguments every listing takes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

import msgspec
import psycopg

from ledger.outages import raised_from
from ledger.recorders import UNDECODABLE
from projections.dialect import Dialect
from projections.errors import InvalidQueryError, ReadModelDamagedError, ReadTimeoutError
from projections.tables import reader

READ_STATEMENT_TIMEOUT_SECONDS = 5.0
"""How long one query of the read models may run before it is stopped (:class:`ReadTimeoutError`): a costly search
cannot hold one of the few database connections a server has for long, nor its CPU."""
MAX_LIMIT = 1000  # a page of the audit log
PAGE_MAX = 500  # a page of profiles, versions or executions, as the API and the CLI take it
PAGE_BOUNDS = {
    "features_max": 65_536,  # 1-2 MiB of steering as JSON
    "record_bytes_max": 1_048_576,  # descriptions and metadata (at most 64 KiB each), an execution's details
}
"""What a page of profiles, versions or executions holds at most, after its first row: it ends before more."""
T = TypeVar("T")


def bounded_page(page: str, order: str, sizes: Mapping[str, str]) -> str:
    """``page`` (a query ordered by ``order``, ``LIMIT :limit``) with how many rows it has (``listed``) and whether
    each is within the page's bounds (``fits``: the first row, or the rows up to it are within each bound of
    :data:`PAGE_BOUNDS` that ``sizes`` names, summing the size it gives as SQL over the row's columns); a query
    around it keeps those that fit. PostgreSQL then never reads the others' large values out of its TOAST
    storage."""
    def running(size: str) -> str:
        return f"SUM({size}) OVER (ORDER BY {order} ROWS UNBOUNDED PRECEDING)"

    within = " AND ".join(f"{running(size)} <= :{bound}" for bound, size in sizes.items())
    return (f"SELECT page.*, COUNT(*) OVER () AS listed, (ROW_NUMBER() OVER (ORDER BY {order}) = 1 OR {within}) "
            f"AS fits FROM ({page}) page")


def page_rows(rows: list[Any], limit: int) -> tuple[list[Any], bool]:
    """The rows of a page (at most ``limit``; read with ``limit + 1`` and :func:`bounded_page`), and whether
    more follow: the row past the limit, or rows the page's bounds left out."""
    if rows and len(rows) < rows[0]["listed"]:
        return rows, True
    return rows[:limit], len(rows) > limit


def checked_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQueryError(f"limit must be an integer from 1 to {MAX_LIMIT} (got {limit!r})", field="limit")
    return limit


def as_uuid(value: UUID | str) -> UUID | None:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        return None


def add_equalities(where: list[str], params: dict[str, Any], profile_id: UUID | str | None = None,
                   **values: Any) -> bool:
    """``column = :column`` for each value given (``profile_id`` first, as a UUID); False when ``profile_id`` is not
    a UUID, which no row can match. Text is compared as it is stored, trimmed; empty text filters nothing, as an
    empty search or tag does not."""
    if profile_id is not None:
        identity = as_uuid(profile_id)
        if identity is None:
            return False
        values = {"profile_id": identity, **values}
    for column, value in values.items():
        if isinstance(value, str):
            value = value.strip() or None
        if value is not None:
            params[column] = value
            where.append(f"{column} = :{column}")
    return True


def damaged(error: BaseException) -> ReadModelDamagedError:
    return ReadModelDamagedError(f"a row of the read model cannot be read ({error}): it was changed outside the "
                                 "ledger; `ledger verify` names it and `ledger rebuild` makes it again from the log")


_open = threading.local()  # the snapshot this thread reads in: (its store, its cursor)
_SQLITE_STEPS = 1_000
"""How many steps of its virtual machine SQLite runs between two looks at the clock (a LIKE over a long text is
one step)."""


def _limit_statements(curs: Any) -> None:
    """Every statement of this PostgreSQL transaction stopped at :data:`READ_STATEMENT_TIMEOUT_SECONDS`."""
    curs.execute(f"SET LOCAL statement_timeout = {max(1, int(READ_STATEMENT_TIMEOUT_SECONDS * 1000))}")


@contextlib.contextmanager
def _time_limited(curs: Any, dialect: Dialect) -> Iterator[None]:
    """A query stopped at :data:`READ_STATEMENT_TIMEOUT_SECONDS` (PostgreSQL's ``statement_timeout``, set for the
    transaction; SQLite's progress handler), as :class:`ReadTimeoutError`."""
    deadline = time.monotonic() + READ_STATEMENT_TIMEOUT_SECONDS
    connection = None if dialect.is_postgres else getattr(curs, "sqlite_cursor", curs).connection
    if connection is not None:
        connection.set_progress_handler(lambda: time.monotonic() > deadline, _SQLITE_STEPS)
    try:
        yield
    except Exception as error:
        if not any(isinstance(cause, psycopg.errors.QueryCanceled) or "interrupted" == str(cause)
                   for cause in raised_from(error, implicitly=True)):
            raise
        raise ReadTimeoutError(
            f"the query ran past {READ_STATEMENT_TIMEOUT_SECONDS:g} s and was stopped: narrow it (fewer or longer "
            "search words, more filters, a smaller page), or retry when the server is less busy") from None
    finally:
        if connection is not None:
            connection.set_progress_handler(None, 0)


class Queries:
    """The base of the query classes of each read model (see :class:`projections.queries.ReadModel`)."""

    store: Any
    dialect: Dialect

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every query this thread makes within it reads one moment of the read models (one read-only transaction,
        repeatable read on PostgreSQL): an answer composed of several queries (a page of profiles and the active
        one's id) never mixes the moments before and after a change. Only around plain code of one thread (not
        around a generator or a stream's body, which would leave it open)."""
        if getattr(_open, "store", None) is self.store:
            yield
            return
        outer = getattr(_open, "store", None), getattr(_open, "cursor", None)
        with self.store.read_shares.taken(), self.store.datastore.transaction(commit=False) as curs:
            if self.dialect.is_postgres:
                curs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                _limit_statements(curs)
            _open.store, _open.cursor = self.store, curs
            try:
                yield
            finally:
                _open.store, _open.cursor = outer

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        if getattr(_open, "store", None) is self.store:
            yield _open.cursor
            return
        with self.store.read_shares.taken(), self.store.datastore.transaction(commit=False) as curs:
            if self.dialect.is_postgres:
                _limit_statements(curs)
            yield curs

    def _all(self, sql: str, params: dict[str, Any] | None = None, *, setup: Sequence[str] = ()) -> list[Any]:
        for name, value in (params or {}).items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(item, str) and "\x00" in item for item in values):
                raise InvalidQueryError(f"{name} must not contain NUL characters", field=name)
        with self._transaction() as curs:
            shared = setup and getattr(_open, "cursor", None) is curs  # its settings end with this query, not later
            if shared:
                curs.execute("SAVEPOINT query_settings")
            for statement in setup:
                curs.execute(statement)
            try:
                with _time_limited(curs, self.dialect):
                    curs.execute(self.dialect.compile(sql), self.dialect.parameters(params or {}))
                    return list(curs.fetchall())
            except Exception as error:
                if UNDECODABLE not in str(error):
                    raise
                raise damaged(error) from None
            finally:
                if shared:
                    curs.execute("ROLLBACK TO SAVEPOINT query_settings")

    def _rows(self, row_type: type[T], rows: list[Any]) -> list[T]:
        readers: dict[type, Any] = self.__dict__.setdefault("_readers", {})
        read = readers.get(row_type) or readers.setdefault(row_type, reader(row_type, self.dialect))
        try:
            return [read(row) for row in rows]
        except (ValueError, TypeError, msgspec.ValidationError) as error:  # (JSON that is not, a value of another type)
            raise damaged(error) from None

    def _one(self, row_type: type[T], sql: str, params: dict[str, Any] | None = None) -> T | None:
        rows = self._rows(row_type, self._all(sql, params)[:1])
        return rows[0] if rows else None
