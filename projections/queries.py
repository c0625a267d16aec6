"""The read side's query facade: answers from the read-model tables (PostgreSQL or SQLite), never the log.

Each read model's queries live next to its table (``projections/<read model>.py``); :class:`ReadModel` has them
all. Listings are keyset-paginated with opaque cursors; a cursor from another listing or an altered one raises
:class:`~projections.errors.InvalidCursorError` (a ``ValidationError``: 422 in the API, exit 1 in the CLI).
"""

from __future__ import annotations

from ledger.settings import Database
from projections.active import ActiveQueries
from projections.audit import AuditQueries
from projections.executions import ExecutionQueries
from projections.log import EventLog
from projections.profiles import ProfileQueries
from projections.registry import PROJECTION_NAMES
from projections.store import ReadModelStore, open_store
from projections.versions import VersionQueries


class ReadModel(ProfileQueries, VersionQueries, ActiveQueries, ExecutionQueries, AuditQueries):
    """Queries over the read models of one database; it never writes (``projections.schema`` creates the
    tables). The composition root gives it the process's store (the application's pool) and log reader; without
    them it opens its own (closed with it)."""

    def __init__(
        self, database: Database | str, *, store: ReadModelStore | None = None, log: EventLog | None = None
    ) -> None:
        self.database = database if isinstance(database, Database) else Database(database)
        self._owned = (store is None, log is None)
        self.store = store or open_store(self.database)
        self.log = log or EventLog(self.database, pool_size=1)
        self.dialect = self.store.dialect

    def close(self) -> None:
        owns_store, owns_log = self._owned
        if owns_log:
            self.log.close()
        if owns_store:
            self.store.datastore.close()

    def positions(self) -> dict[str, int]:
        """The log position each read model has applied."""
        return self.store.positions(PROJECTION_NAMES)

    def log_position(self) -> int:
        """The last position recorded in the event log (0 when empty)."""
        return self.log.head()

    def positions_and_head(self) -> tuple[dict[str, int], int]:
        """The log position each read model has applied and the log's head, of one moment (one query)."""
        return self.store.positions_and_head(PROJECTION_NAMES, self.log.events_table)
