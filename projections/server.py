"""Rebuilding a read model on the PostgreSQL server: one ``INSERT … SELECT`` over the events table.

A read model that names a *server build* (``ReadModelProjection.server_build``, PostgreSQL only) has its
rebuild tables filled by the server itself, from the stored events, in a thread of its own: the server's CPU
makes these rows (and then their indexes) while Python folds the other read models. The statement must give
the rows the live projection writes; what it cannot read exactly is left to the Python fold:

* the event types it handles are resolved in Python (``topics``: topic → the values the statement needs);
  an event type it does not handle (a class with upcasters, say) is left out of the statement;
* transcoded top-level values (``{"_type_":"uuid_hex",…}``, ``{"_type_":"datetime_iso",…}``) are written as
  the live projection writes them (an id as its hyphenated text, a time as its ISO text); an event whose
  JSON text holds any other ``"_type_"`` (a nested one, another transcoding) is left out too.

The events left out are then read, decoded and folded in Python, into the same table, in the same
transaction. The whole build reads one snapshot of the log (``REPEATABLE READ``), up to the head at its start;
the swap applies the rest, as for every rebuild.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.utils import resolve_topic

from projections.bulk import MemoryBuild
from projections.projection import ReadModelProjection
from projections.store import REBUILD_SUFFIX

# SQL over ``v`` (a row of ``jsonb_each`` and its ``transcoding``) and ``r.text`` (the state's JSON text): a
# top-level value with ids and times as the read models write them (an id as its hyphenated text, a time as
# its ISO text), whether it was transcoded, and how many transcoded values the text holds in all (an event
# with a nested one, or with another transcoding, is left to the Python fold).
TRANSCODING = """CASE WHEN jsonb_typeof(value) = 'object' AND value ? '_type_'
    AND jsonb_typeof(value->'_data_') = 'string' AND value - '_type_' - '_data_' = '{}'
    AND value->>'_type_' IN ('uuid_hex', 'datetime_iso') THEN value->>'_type_' END"""
TOP_LEVEL_VALUE = """CASE WHEN v.transcoding = 'uuid_hex' THEN to_jsonb((v.value->>'_data_')::uuid::text)
    WHEN v.transcoding = 'datetime_iso' THEN v.value->'_data_' ELSE v.value END AS value,
    v.transcoding IS NOT NULL AS transcoded"""
TRANSCODED_IN_TEXT = """(octet_length(r.text) - octet_length(replace(r.text, '"_type_"', ''))) / 8"""


@dataclass(frozen=True)
class ServerBuild:
    """``statement``: INSERT … SELECT with ``{events}`` (the events table), ``{transcoding}``,
    ``{top_level_value}`` and ``{transcoded_in_text}`` (above), the read model's ``{tables}``, and parameters
    ``head`` and one array per value of ``topics``; ``topics(cls)`` gives those values for an event class, or
    None where the statement cannot make its rows. ``table``: the table it fills."""

    table: str
    statement: str
    topics: Callable[[type], Mapping[str, Any] | None]


class ServerRebuild:
    """Runs a projection's :class:`ServerBuild` in a thread: :meth:`start`, then :meth:`join` (its position)."""

    def __init__(self, store: Any, log: Any, projection: ReadModelProjection) -> None:
        self.store, self.log, self.projection = store, log, projection
        self.build: ServerBuild = projection.server_build  # type: ignore[assignment]
        self.position = 0
        self.left_out = 0  # events folded in Python instead
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"rebuild-{projection.name}")

    def start(self) -> None:
        self._thread.start()

    def join(self) -> int:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self.position

    def wait(self) -> None:
        """Let the thread end (after a failure elsewhere, before the connections close)."""
        self._thread.join()

    def _run(self) -> None:
        try:
            self.store.start_rebuilt(self.projection)
            self.position = self._fill()
            tables: dict[str, dict[Any, Any]] = {table: {} for table in self.projection.tables}
            self.store.finish_rebuilt(self.projection, tables, [], self.position)
        except BaseException as error:  # noqa: BLE001 - raised again by join()
            self._error = error

    def _fill(self) -> int:
        from psycopg.rows import tuple_row
        from psycopg.sql import SQL, Identifier

        recorder = self.log.recorder
        events = SQL("{}.{}").format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        physical = self.projection.physical_names(REBUILD_SUFFIX)
        with recorder.datastore.get_connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
            with conn.cursor(row_factory=tuple_row) as curs:
                curs.execute(SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(events))
                head = curs.fetchone()[0]
                curs.execute(SQL("SELECT DISTINCT topic FROM {} WHERE notification_id <= %s").format(events), (head,))
                params = self._topic_params([row[0] for row in curs.fetchall()])
                statement = self.build.statement.format(
                    events=events.as_string(conn), transcoding=TRANSCODING, top_level_value=TOP_LEVEL_VALUE,
                    transcoded_in_text=TRANSCODED_IN_TEXT, **physical
                )
                made = 0
                if params["topics"]:
                    curs.execute(statement, {"head": head, **params})
                    made = curs.rowcount
                curs.execute(SQL("SELECT count(*) FROM {} WHERE notification_id <= %s").format(events), (head,))
                if curs.fetchone()[0] > made:
                    self._fold_left_out(curs, events, physical, head)
        return head

    def _topic_params(self, topics: Sequence[str]) -> dict[str, list[Any]]:
        params: dict[str, list[Any]] = {"topics": []}
        for topic in topics:
            values = self.build.topics(resolve_topic(topic))
            if values is None:
                continue
            params["topics"].append(topic)
            for name, value in values.items():
                params.setdefault(name, []).append(value)
        return params

    def _fold_left_out(self, curs: Any, events: Any, physical: Mapping[str, str], head: int) -> None:
        from psycopg.sql import SQL, Identifier

        curs.execute(
            SQL(
                "SELECT notification_id, originator_id, originator_version, topic, state FROM {} e "
                "WHERE notification_id <= %s AND NOT EXISTS (SELECT 1 FROM {} WHERE position = e.notification_id) "
                "ORDER BY notification_id"
            ).format(events, Identifier(physical[self.build.table])),
            (head,),
        )
        rows = curs.fetchall()  # few: events of a type the statement leaves out, or with other transcodings
        self.left_out = len(rows)
        build = MemoryBuild(self.projection)
        decode = self.log.decode
        build.apply([(row[0], decode(row[1], row[2], row[3], row[4])) for row in rows])
        for table, sealed in build.take_sealed().items():
            if sealed:
                self.store._load(curs, physical[table], list(sealed[0]), sealed)
