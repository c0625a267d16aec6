"""The answer of ``GET /api/profiles/active``, encoded once per log position and served from memory.

Every recorded event might change the answer, so the cached body is keyed by a *generation* that moves on every
event this process learns of: its own saves (``ProfileLedger.add_listener``) and, on PostgreSQL, the
``NOTIFY`` the event store sends on every insert. A notification can arrive after the writer's client read its
answer and asked this server, so on PostgreSQL each request also needs the log's head read after it came (one
read shared by every request that came before it started: under load, one query serves many requests), and a
body whose position is behind it is loaded again: a write made by another server or the CLI shows at once.
A body is loaded as: note the generation, read the log's head, read the read models' position, read the
row. It is kept only when the read models had reached the head (otherwise the projections are behind and the
next request asks the database again), and served only while the generation has not moved, the read models'
position satisfies the request's ``min_position``, and it is younger than ``max_age`` (which bounds anything the
generation cannot see: a lost notification, a rebuild swapped in). On SQLite, where there is no NOTIFY, the
generation also moves whenever the database file changed since the last request (``PRAGMA data_version`` on a
connection of the cache's own: a few microseconds), so a write by another process shows at once too.

Loads are shared: requests that miss while a load of the current generation is under way wait for that one.

The answer shows the version *in force* (:func:`in_force`): pinned, that version's number and content, with
``pinned`` and the profile's ``latest_version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Response
from litestar.response.base import ASGIResponse
from litestar.serialization import encode_json

from ledger.api.schemas import ProfileRead
from ledger.states import convert, entity_tag, showing_version

MAX_AGE_SECONDS = 0.5


def in_force(body: ProfileRead, pinned_version: int | None, pinned: Any = None) -> ProfileRead:
    """The active profile's body showing the version in force: ``pinned`` (a version row or a profile state) is
    the pinned version, whose content (its spec, description, tags, products and metadata; the name stays the
    profile's own, by which it is found) the body shows under that version's number."""
    latest = body.version
    if pinned_version is None or pinned is None or pinned_version == latest:
        return msgspec.structs.replace(body, pinned=pinned_version is not None, latest_version=latest)
    return msgspec.structs.replace(showing_version(body, pinned), pinned=True, latest_version=latest)


def active_body(reads: Any, row: Any, pinned_version: int | None) -> ProfileRead:
    """A read-model row of the active profile as the active view shows it (the version in force)."""
    pinned = reads.get_version(row.id, pinned_version) if pinned_version is not None else None
    return in_force(convert(row, ProfileRead), pinned_version, pinned)


class PreparedResponse(Response[Any]):
    """A response built once and answered as is: the route returns it instead of a fresh ``Response``, and
    Litestar's conversion to an ASGI response hands back the one made when the body was loaded."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(body, media_type="application/json", headers=headers)
        self._asgi = ASGIResponse(body=body, media_type="application/json", headers=headers)

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:  # type: ignore[override]
        return self._asgi


@dataclass(frozen=True)
class Loaded:
    generation: int
    position: int
    """The position every read model had reached when the row was read."""
    response: PreparedResponse | None
    """The encoded ``ProfileRead``; None when no profile is active."""
    loaded_at: float
    cacheable: bool


class ActiveProfileCache:
    """The encoded active profile of one read model (see the module's docstring)."""

    def __init__(self, reads: Any, *, max_age: float = MAX_AGE_SECONDS, sqlite_path: str | None = None) -> None:
        self.reads = reads
        self.max_age = max_age
        self._counter = itertools.count(1)
        self._generation = next(self._counter)
        self._entry: Loaded | None = None
        self._loading: tuple[int, asyncio.Future[Loaded]] | None = None  # the load under way
        self._head_reading: tuple[float, asyncio.Future[int]] | None = None  # (started, the head) under way
        self._sqlite: sqlite3.Connection | None = None
        self._data_version: int | None = None
        if sqlite_path is not None:
            self._sqlite = sqlite3.connect(sqlite_path, check_same_thread=False, isolation_level=None)

    # -- invalidation ----------------------------------------------------------------------------------
    def saw(self) -> None:
        """An event was recorded (callable from any thread)."""
        self._generation = next(self._counter)

    def _sqlite_changed(self) -> None:
        """Move the generation when another connection (another process, say) committed to the SQLite file."""
        assert self._sqlite is not None
        version = self._sqlite.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self.saw()

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None

    # -- answering -------------------------------------------------------------------------------------
    async def response(self, min_position: int | None = None) -> PreparedResponse | None:
        """The encoded active profile (None: none is active), as of at least ``min_position``."""
        if self._sqlite is not None:
            self._sqlite_changed()
        else:  # what another server committed before this request came is in the answer, notified yet or not
            min_position = max(min_position or 0, await self._head_since(time.monotonic()))
        entry = self._entry
        if entry is not None and self._fresh(entry, min_position):
            return entry.response
        loaded = await self._shared_load()
        if min_position and loaded.position < min_position:
            loaded = await anyio.to_thread.run_sync(self._load, self._generation)
        return loaded.response

    def _fresh(self, entry: Loaded, min_position: int | None) -> bool:
        return (
            entry.generation == self._generation
            and (not min_position or entry.position >= min_position)
            and time.monotonic() - entry.loaded_at < self.max_age
        )

    async def _head_since(self, arrived: float) -> int:
        """The log's head, read after ``arrived``: one read serves every request that came before it started."""
        while True:
            reading = self._head_reading
            if reading is not None and reading[0] >= arrived:
                return await asyncio.shield(reading[1])
            if reading is None or reading[1].done():
                reading = (time.monotonic(), asyncio.ensure_future(anyio.to_thread.run_sync(self.reads.log_position)))
                self._head_reading = reading
                return await asyncio.shield(reading[1])
            with contextlib.suppress(Exception):  # a read under way began too early: the next begins after it
                await asyncio.shield(reading[1])

    async def _shared_load(self) -> Loaded:
        generation = self._generation
        loading = self._loading
        if loading is None or loading[0] != generation:
            # a task of its own: a client that goes away does not cancel the load the others wait for
            loading = (generation, asyncio.ensure_future(self._load_and_keep(generation)))
            self._loading = loading
        return await asyncio.shield(loading[1])

    async def _load_and_keep(self, generation: int) -> Loaded:
        try:
            loaded = await anyio.to_thread.run_sync(self._load, generation)
        finally:
            if self._loading is not None and self._loading[0] == generation:
                self._loading = None
        if loaded.cacheable:
            self._entry = loaded
        return loaded

    def _load(self, generation: int) -> Loaded:
        reads = self.reads
        head = reads.log_position()
        position = min(reads.positions().values(), default=0)
        with reads.snapshot():  # the slot and the row of one moment: the row shown is the active one
            active = reads.active_profile()
            row = reads.get_profile(active.profile_id) if active is not None else None
            body = active_body(reads, row, active.pinned_version) if row is not None and active is not None else None
        response = None
        if row is not None and body is not None:  # with the ETag of the version it shows, as GET by id gives it
            response = PreparedResponse(encode_json(body), {"ETag": entity_tag(row.id, body.version, row.revision)})
        return Loaded(generation, position, response, time.monotonic(), cacheable=position >= head)
