"""Projecting inline: the read models are written in the transaction that records the events, where that is
safe; whatever is not is left to the asynchronous worker, and the two together give the rebuilt read models."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.application import ProfileLedger
from ledger.domainmodel import Profile
from projections.inline import InlineProjection
from projections.log import EventLog
from projections.runner import rebuild
from projections.schema import create_read_side
from projections.store import lock_id, open_store
from tests.projections.dumps import dump
from tests.projections.test_rebuild import commands, run_commands


class Inline:
    """A second application on the same database, writing the read models inline (a server, say)."""

    def __init__(self, database) -> None:
        self.ledger = ProfileLedger(env=database.eventsourcing_env(pool_size=2))
        self.store = open_store(database, datastore=self.ledger.recorder.datastore)
        create_read_side(self.store, database)
        self.reached: list[int] = []
        self.projection = InlineProjection(self.store, EventLog(database, app=self.ledger), reached=self.reached.append)
        self.ledger.recorder.in_transaction = self.projection


@pytest.fixture
def inline(database, worker) -> Iterator[Inline]:
    writer = Inline(database)
    yield writer
    writer.ledger.close()


def test_a_command_is_in_every_read_model_when_it_returns(inline, read_model):
    created = inline.ledger.create_profile({"name": "inline", "steering": {3: 1.0}, "tags": ["t"]}).profile
    inline.ledger.activate_profile(created.id)
    execution = inline.ledger.record_execution(created.id, seed=7)
    position = read_model.log_position()
    assert inline.reached[-1] == position  # no worker ran: the commit itself brought every read model there
    assert set(read_model.positions().values()) == {position}
    shown = read_model.get_profile(created.id)
    assert (shown.name, shown.is_active, shown.execution_count) == ("inline", True, 1)
    assert read_model.get_execution(execution.execution_id).seed == 7


def test_events_recorded_without_it_are_left_to_the_worker_and_never_applied_twice(inline, ledger, project,
                                                                                     read_model, database):
    elsewhere = ledger.create_profile({"name": "elsewhere", "steering": {1: 1.0}}).profile  # no inline projection
    here = inline.ledger.create_profile({"name": "here", "steering": {2: 1.0}}).profile
    assert inline.reached == []  # behind: not written inline, as that would skip the event before it
    project()
    assert read_model.get_profile(elsewhere.id) is not None and read_model.get_profile(here.id) is not None
    inline.ledger.update_profile(here.id, {"description": "caught up"})
    assert inline.reached[-1] == read_model.log_position()  # caught up: inline again
    live = dump(database)
    rebuild(database, progress=False)
    assert dump(database) == live
    assert inline.store.parked() == []


def test_a_read_model_that_fails_leaves_the_events_recorded_and_the_worker_applies_them(inline, project, read_model,
                                                                                       caplog):
    def refuse(event):
        raise RuntimeError("this handler is broken")

    profiles = next(p for p in inline.projection.projections if p.name == "profiles")
    broken = dataclasses.replace(profiles, handlers={**profiles.handlers, Profile.Created: refuse})
    inline.projection.projections = [broken if p is profiles else p for p in inline.projection.projections]
    created = inline.ledger.create_profile({"name": "recorded anyway", "steering": {1: 1.0}}).profile
    assert "not projected inline" in caplog.text and inline.reached == []
    assert read_model.get_profile(created.id) is None  # no read model was written inline
    project()  # the worker's own (working) read models
    assert read_model.get_profile(created.id).name == "recorded anyway"


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_a_read_model_whose_lock_is_held_is_not_waited_for(database_url, inline, project, read_model, database,
                                                           caplog):
    with psycopg.connect(database_url) as holder:  # a worker in the middle of a batch, say (SQLite: one writer)
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id("profiles"),))
        created = inline.ledger.create_profile({"name": "while locked", "steering": {1: 1.0}}).profile
        positions = read_model.positions()
    assert max(positions.values()) < read_model.log_position() and inline.reached == []  # left to the worker
    assert read_model.get_profile(created.id) is None and "not projected inline" not in caplog.text
    project()
    assert read_model.get_profile(created.id).name == "while locked"
    live = dump(database)
    rebuild(database, progress=False)
    assert dump(database) == live


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=commands, writers=st.lists(st.booleans(), min_size=1), catch_ups=st.lists(st.booleans(), min_size=1))
def test_inline_and_asynchronous_projection_together_give_the_rebuilt_read_models(inline, ledger, project, database,
                                                                                   script, writers, catch_ups):
    for number, step in enumerate(script):
        run_commands(inline.ledger if writers[number % len(writers)] else ledger, [step])
        if catch_ups[number % len(catch_ups)]:
            project()
    project()
    live = dump(database)
    rebuild(database, progress=False)
    assert dump(database) == live
    assert inline.store.parked() == []
