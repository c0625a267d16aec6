"""Workers on PostgreSQL: several at once apply each event once; a worker killed mid-batch loses nothing."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ledger.application import ProfileLedger
from ledger.settings import Database
from projections.queries import ReadModel
from projections.runner import ProjectionWorker, rebuild
from tests.projections.dumps import dump
from tests.waiting import retry_until_it_works, wait_until

pytestmark = pytest.mark.postgres
ROOT = Path(__file__).resolve().parents[2]


class Writer(threading.Thread):
    """Keeps recording commands (creates, revisions, activations, executions, deletions) until stopped."""

    def __init__(self, database: Database, seed: int) -> None:
        super().__init__(daemon=True)
        self.app = ProfileLedger(env=database.eventsourcing_env(pool_size=2))
        self.random = random.Random(seed)
        self.stop = threading.Event()
        self.position = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        live = []
        try:
            number = 0
            while not self.stop.is_set():
                number += 1
                self.step(number, live)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def step(self, number: int, live: list) -> None:
        choice = self.random.random()
        if not live or choice < 0.3:
            outcome = self.app.create_profile(
                {"name": f"p{number}", "tags": [f"t{number % 4}"], "steering": {number % 7: 1.0}}
            )
            live.append(outcome.profile.id)
            self.position = outcome.position
            return
        target = self.random.choice(live)
        if choice < 0.5:
            self.position = self.app.update_profile(target, {"steering": {number % 11: 0.5}}).position or self.position
        elif choice < 0.6:
            self.position = self.app.update_profile(
                target, {"description": f"d{number}"}, bump_version=False
            ).position or self.position
        elif choice < 0.7:
            self.position = self.app.activate_profile(target).position or self.position
        elif choice < 0.9:
            self.position = self.app.record_execution(target, run_id=f"r{number}", seed=number).position
        elif len(live) > 3 and not self.app.get_profile(target).is_active:
            live.remove(target)
            self.position = self.app.delete_profile(target, delete_executions=number % 2 == 0).position

    def finish(self) -> int:
        self.stop.set()
        self.join()
        self.app.close()
        if self.error:
            raise self.error
        return self.position


WORKER_PROCESS = """
import signal, sys, threading
from projections.runner import ProjectionWorker, run_projections
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
worker = ProjectionWorker(sys.argv[1], batch_size=25)
print("ready", flush=True)
run_projections(sys.argv[1], stop, worker=worker)
"""
"""A projection worker in a process of its own, in small batches (so that a kill lands mid-batch)."""


def _start_worker_process(url: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER_PROCESS, url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    line = process.stdout.readline()
    assert "ready" in line, line
    return process


def test_a_worker_killed_mid_batch_ten_times_ends_identical_to_a_rebuild(postgres_url):
    database = Database(postgres_url)
    read_model = ReadModel(database)
    writer = Writer(database, seed=1)
    writer.start()
    try:
        moved = 0
        for _ in range(10):
            before = min(read_model.positions().values())
            process = _start_worker_process(postgres_url)
            threading.Event().wait(random.uniform(0.1, 0.4))
            process.send_signal(signal.SIGKILL)
            process.wait()
            moved += min(read_model.positions().values()) > before
    finally:
        last = writer.finish()
    assert moved >= 5, "the killed workers should have been applying events"
    process = _start_worker_process(postgres_url)
    try:
        wait_until(lambda: min(read_model.positions().values()) >= last, timeout=30, what="the read models")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    followed = dump(database)
    rebuild(database, progress=False)
    assert dump(database) == followed
    read_model.close()


def test_two_workers_at_once_give_what_one_gives(postgres_url):
    database = Database(postgres_url)
    stop = threading.Event()
    workers = [ProjectionWorker(database, batch_size=10), ProjectionWorker(database, batch_size=10)]
    threads = [threading.Thread(target=worker.run, args=(stop,)) for worker in workers]
    for thread in threads:
        thread.start()
    writer = Writer(database, seed=2)
    writer.start()
    threading.Event().wait(3.0)
    last = writer.finish()
    read_model = ReadModel(database)
    try:
        wait_until(lambda: min(read_model.positions().values()) >= last, timeout=30, what="the read models")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for worker in workers:
            worker.close()
    followed = dump(database)
    rebuild(database, progress=False)
    assert dump(database) == followed
    read_model.close()




@contextmanager
def following(database: Database, worker: ProjectionWorker) -> Iterator[tuple[ProfileLedger, ReadModel]]:
    """``worker`` following the log in a thread, beside an application writing to it and the read models."""
    app = ProfileLedger(env=database.eventsourcing_env(pool_size=2))
    read_model = ReadModel(database)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        yield app, read_model
    finally:
        stop.set()
        thread.join()
        worker.close()
        app.close()
        read_model.close()


def test_a_worker_wakes_on_notify_and_survives_a_database_restart(postgres_server, postgres_url):
    database = Database(postgres_url)
    worker = ProjectionWorker(database, poll_seconds=30)  # only a NOTIFY can wake it within the test
    with following(database, worker) as (app, read_model):
        position = app.create_profile({"name": "before", "steering": {1: 1.0}}).position
        wait_until(lambda: min(read_model.positions().values()) >= position, timeout=5, what="the read models")
        if postgres_server.data_dir is None:
            pytest.skip("needs a server these tests started")
        # With -l the restarted server writes to a log file instead of holding pg_ctl's output pipes open.
        postgres_server.pg_ctl("restart", "-m", "fast", "-l", str(postgres_server.data_dir.parent / "server.log"))
        position = retry_until_it_works(lambda: app.create_profile({"name": "after", "steering": {1: 1.0}}).position)
        wait_until(lambda: min(retry_until_it_works(read_model.positions).values()) >= position, timeout=15,
                   what="the read models")
        assert read_model.get_profile_by_name("after") is not None


def test_an_insert_notifies_its_last_position_and_a_worker_known_to_be_there_is_not_woken(postgres_url):
    import psycopg

    database = Database(postgres_url)
    known = [0]  # what this process knows the read models reached (a server: its inline projection's commits)
    worker = ProjectionWorker(database, poll_seconds=30, reached=lambda: known[0])
    looked: list[int] = []
    catch_up = worker.catch_up
    worker.catch_up = lambda stop=None: looked.append(1) or catch_up(stop)  # type: ignore[method-assign]
    with psycopg.connect(postgres_url, autocommit=True) as listener, following(database, worker) as (app, read_model):
        listener.execute(f'LISTEN "{app.recorder.channel_name}"')
        wait_until(lambda: len(looked) >= 1, timeout=5, what="the worker's first look")
        time.sleep(1.0)  # it looks once more when its LISTEN starts (anything before may have been missed)
        before = len(looked)
        known[0] = 10**9
        position = app.create_profile({"name": "known", "steering": {1: 1.0}}).position
        assert [note.payload for note in listener.notifies(timeout=5, stop_after=1)] == [str(position)]
        time.sleep(0.5)
        assert len(looked) == before, "woken for an insert it was known to have"
        known[0] = 0
        position = app.create_profile({"name": "unknown", "steering": {1: 1.0}}).position
        wait_until(lambda: min(read_model.positions().values()) >= position, timeout=5, what="the read models")
        assert len(looked) == before + 1
