"""Group commit on PostgreSQL: concurrent saves share a transaction, and each caller gets exactly its own answer."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from threading import Barrier

import pytest
from eventsourcing.persistence import (
    DataError,
    IntegrityError,
    OperationalError,
    RecordConflictError,
    StoredEvent,
)

from ledger.group_commit import GroupCommitter
from ledger.signing import SigningKeys
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres
THREADS = 32


def stored(originator_id: uuid.UUID, version: int) -> StoredEvent:
    """An event as the application's mapper would store it (signed with the session's key)."""
    state = SigningKeys.from_env(os.environ).seal_all([(originator_id, version, "tests:Thing", b"{}")])[0]
    return StoredEvent(originator_id=originator_id, originator_version=version, topic="tests:Thing", state=state)


def held(committer: GroupCommitter):
    """Hold the next batch in flight until the returned event is set; saves meanwhile queue up."""
    real, entered, release = committer._insert, threading.Event(), threading.Event()

    def insert(events, **options):
        if not entered.is_set():
            entered.set()
            assert release.wait(10)
        return real(events, **options)

    committer._insert = insert
    return entered, release


def queued(committer: GroupCommitter, count: int) -> None:
    wait_until(lambda: len(committer._queue) >= count, 10, "the saves to queue", interval=0.005)


def save_in_background(pool: ThreadPoolExecutor, recorder, events, **options):
    def call():
        try:
            return recorder.insert_events(events, **options)
        except Exception as error:  # noqa: BLE001 - the assertions look at it
            return error

    return pool.submit(call)


@contextmanager
def behind_a_held_batch(committer: GroupCommitter, recorder) -> Iterator[tuple[ThreadPoolExecutor, threading.Event]]:
    """Threads whose saves queue up behind a batch held in flight until the event yielded is set; that batch has
    committed when the block ends."""
    entered, release = held(committer)
    with ThreadPoolExecutor(8) as pool:
        blocker = save_in_background(pool, recorder, [stored(uuid.uuid4(), 1)])
        assert entered.wait(10)
        yield pool, release
        assert not isinstance(blocker.result(timeout=30), Exception)


def test_concurrent_commands_get_their_own_positions_and_share_transactions(pg_ledger):
    barrier = Barrier(THREADS)

    def create(i: int):
        barrier.wait()
        return pg_ledger.create_profile({"name": f"profile {i}", "steering": {i: 1.0}})

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(create, range(THREADS)))
    positions = [outcome.position for outcome in outcomes]
    assert len(set(positions)) == THREADS
    for outcome in outcomes:
        # a create records the profile's Created, then its name index's Registered and Claimed, contiguously
        created, registered, claimed = pg_ledger.recorder.select_notifications(start=outcome.position - 2, limit=3)
        assert (created.originator_id, created.originator_version) == (outcome.profile.id, 1)
        assert created.topic.endswith("Profile.Created") and claimed.topic.endswith("ProfileName.Claimed")
        assert registered.originator_id == claimed.originator_id and claimed.id == outcome.position
    committer = pg_ledger.recorder.group_commit
    assert committer.saves >= THREADS and committer.batches < committer.saves  # some saves did share
    assert pg_ledger.verify_log().ok


def test_many_threads_saving_their_own_streams_keep_them_contiguous(pg_ledger):
    recorder, saves = pg_ledger.recorder, 15
    streams = [uuid.uuid4() for _ in range(16)]

    def write(stream: uuid.UUID) -> list[int]:
        return [recorder.insert_events([stored(stream, version)])[0] for version in range(1, saves + 1)]

    with ThreadPoolExecutor(len(streams)) as pool:
        positions = dict(zip(streams, pool.map(write, streams)))
    for stream, mine in positions.items():
        assert mine == sorted(mine)
        assert [e.originator_version for e in recorder.select_events(stream)] == list(range(1, saves + 1))
        for version, position in enumerate(mine, start=1):
            (notification,) = recorder.select_notifications(start=position, limit=1)
            assert (notification.originator_id, notification.originator_version) == (stream, version)
    everything = [p for mine in positions.values() for p in mine]
    assert len(set(everything)) == len(everything)
    assert pg_ledger.verify_log().ok


def test_a_conflicting_save_is_rejected_alone_and_its_batch_mates_commit(pg_ledger):
    recorder, committer = pg_ledger.recorder, pg_ledger.recorder.group_commit
    taken = uuid.uuid4()
    recorder.insert_events([stored(taken, 1)])
    with behind_a_held_batch(committer, recorder) as (pool, release):
        batches_before = committer.batches
        fresh = [uuid.uuid4() for _ in range(4)]
        saves = [save_in_background(pool, recorder, [stored(fresh[0], 1), stored(fresh[0], 2)])]
        queued(committer, 1)
        saves.append(save_in_background(pool, recorder, [stored(fresh[1], 1), stored(taken, 1)]))  # the guilty one
        queued(committer, 2)
        saves += [save_in_background(pool, recorder, [stored(stream, 1)]) for stream in fresh[2:]]
        queued(committer, 4)
        release.set()
        results = [save.result(timeout=30) for save in saves]
    assert isinstance(results[1], IntegrityError) and isinstance(results[1], RecordConflictError)
    for index in (0, 2, 3):
        assert not isinstance(results[index], Exception), results[index]
    assert len(results[0]) == 2 and results[0][1] == results[0][0] + 1
    for stream, result in zip([fresh[0], fresh[2], fresh[3]], [results[0], results[2], results[3]]):
        (notification,) = recorder.select_notifications(start=result[-1], limit=1)
        assert notification.originator_id == stream
    assert recorder.select_events(fresh[1]) == []  # the guilty save is all or nothing
    assert committer.batches > batches_before
    assert pg_ledger.verify_log().ok


def test_two_saves_of_the_same_version_in_one_queue_never_share_a_batch(pg_ledger):
    recorder, committer = pg_ledger.recorder, pg_ledger.recorder.group_commit
    contested, other = uuid.uuid4(), uuid.uuid4()
    entered, release = held(committer)
    with ThreadPoolExecutor(4) as pool:
        blocker = save_in_background(pool, recorder, [stored(uuid.uuid4(), 1)])
        assert entered.wait(10)
        first = save_in_background(pool, recorder, [stored(contested, 1)])
        queued(committer, 1)
        second = save_in_background(pool, recorder, [stored(contested, 1)])
        queued(committer, 2)
        bystander = save_in_background(pool, recorder, [stored(other, 1)])
        queued(committer, 3)
        release.set()
        results = [first.result(timeout=30), second.result(timeout=30), bystander.result(timeout=30)]
        blocker.result(timeout=30)
    assert not isinstance(results[0], Exception) and isinstance(results[1], RecordConflictError)
    assert not isinstance(results[2], Exception)
    assert [e.originator_version for e in recorder.select_events(contested)] == [1]
    assert pg_ledger.verify_log().ok


def test_a_save_that_must_find_a_stream_unchanged_commits_only_before_a_write_to_it(pg_ledger):
    """Saves in one queue, whichever batches they land in: one that read a stream before a write to it queued first
    fails (nothing of it recorded); one that read it after that write, queued before the next write, commits; so
    do the saves around them, in queue order."""
    recorder, committer = pg_ledger.recorder, pg_ledger.recorder.group_commit
    watched = uuid.uuid4()
    recorder.insert_events([stored(watched, 1)])
    with behind_a_held_batch(committer, recorder) as (pool, release):
        stale, fresh, bystander = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        queue = [
            ([stored(watched, 2)], ()),
            ([stored(stale, 1)], [(watched, 1)]),
            ([stored(fresh, 1)], [(watched, 2)]),
            ([stored(watched, 3)], ()),
            ([stored(bystander, 1)], ()),
        ]
        saves = []
        for number, (events, unchanged) in enumerate(queue, start=1):
            saves.append(save_in_background(pool, recorder, events, unchanged=unchanged))
            queued(committer, number)
        release.set()
        results = [save.result(timeout=30) for save in saves]
    assert isinstance(results[1], RecordConflictError), results[1]
    assert not any(isinstance(result, Exception) for index, result in enumerate(results) if index != 1), results
    positions = [results[index][0] for index in (0, 2, 3, 4)]
    assert positions == sorted(positions)
    assert recorder.select_events(stale) == [] and len(recorder.select_events(fresh)) == 1
    assert pg_ledger.verify_log().ok


def test_a_connection_error_reaches_its_batch_and_the_saves_queued_meanwhile_at_once(pg_ledger):
    recorder, committer = pg_ledger.recorder, pg_ledger.recorder.group_commit
    entered, release = held(committer)
    real = committer._insert
    failing, late_queued = threading.Event(), threading.Event()

    def insert(events, **options):
        if failing.is_set():
            failing.clear()
            assert late_queued.wait(10)  # the database is slow to say it is gone: one more save queues meanwhile
            raise OperationalError("the database went away")
        return real(events, **options)

    with ThreadPoolExecutor(6) as pool:
        blocker = save_in_background(pool, recorder, [stored(uuid.uuid4(), 1)])
        assert entered.wait(10)
        committer._insert = insert
        failing.set()
        streams = [uuid.uuid4() for _ in range(4)]
        victims = []
        for number, stream in enumerate(streams[:3], start=1):
            victims.append(save_in_background(pool, recorder, [stored(stream, 1)]))
            queued(committer, number)
        release.set()
        assert not isinstance(blocker.result(timeout=30), Exception)
        while failing.is_set():  # the victims' batch is in flight
            time.sleep(0.005)
        victims.append(save_in_background(pool, recorder, [stored(streams[3], 1)]))
        queued(committer, 1)
        late_queued.set()
        results = [victim.result(timeout=30) for victim in victims]
    assert all(isinstance(result, OperationalError) for result in results), results
    assert all(recorder.select_events(stream) == [] for stream in streams)
    later = recorder.insert_events([stored(uuid.uuid4(), 1)])  # the committer carries on
    assert len(later) == 1
    assert pg_ledger.verify_log().ok


def test_a_save_whose_content_fails_is_rejected_alone(pg_ledger):
    recorder, committer = pg_ledger.recorder, pg_ledger.recorder.group_commit
    entered, release = held(committer)
    real, poisoned = committer._insert, uuid.uuid4()

    def insert(events, **options):
        if any(event.originator_id == poisoned for event in events):
            raise DataError("invalid byte sequence")
        return real(events, **options)

    with ThreadPoolExecutor(8) as pool:
        blocker = save_in_background(pool, recorder, [stored(uuid.uuid4(), 1)])
        assert entered.wait(10)
        committer._insert = insert
        streams = [uuid.uuid4(), uuid.uuid4(), poisoned, uuid.uuid4(), uuid.uuid4()]
        saves = []
        for number, stream in enumerate(streams, start=1):
            saves.append(save_in_background(pool, recorder, [stored(stream, 1)]))
            queued(committer, number)
        release.set()
        results = [save.result(timeout=30) for save in saves]
        blocker.result(timeout=30)
    assert isinstance(results[2], DataError)
    assert all(not isinstance(result, Exception) for index, result in enumerate(results) if index != 2)
    assert recorder.select_events(poisoned) == []
    assert pg_ledger.verify_log().ok


def test_a_closed_committer_refuses_new_saves():
    committer = GroupCommitter(lambda events, unchanged=(): list(range(len(events))))
    assert committer.save([stored(uuid.uuid4(), 1)]) == [0]
    committer.close()
    with pytest.raises(Exception, match="closed"):
        committer.save([stored(uuid.uuid4(), 1)])


def test_saves_after_the_application_closed_fail_at_once_and_record_nothing(postgres_url):
    from ledger.application import ProfileLedger
    from ledger.settings import Database

    app = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=2))
    recorder = app.recorder
    assert len(recorder.insert_events([stored(uuid.uuid4(), 1)])) == 1
    app.close()
    late = uuid.uuid4()
    with ThreadPoolExecutor(4) as pool:
        results = [save_in_background(pool, recorder, [stored(late, n)]) for n in range(1, 5)]
        assert all(isinstance(result.result(timeout=30), Exception) for result in results)
    reopened = ProfileLedger(env=Database(postgres_url).eventsourcing_env(pool_size=2))
    try:
        assert reopened.recorder.select_events(late) == []
        assert reopened.verify_log().ok
    finally:
        reopened.close()
