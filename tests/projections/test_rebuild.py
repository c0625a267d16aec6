"""Rebuilding read models from position 0 gives the same tables, and queries keep answering meanwhile."""

from __future__ import annotations

import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.errors import LedgerError
from projections.runner import rebuild
from projections.store import open_store
from tests.projections.dumps import dump
from tests.projections.test_read_models import run_script


def test_a_rebuild_reproduces_the_live_read_models(database, ledger, project, read_model):
    run_script(ledger)
    project()
    live = dump(database)
    positions = rebuild(database, progress=False)
    assert set(positions.values()) == {read_model.log_position()}
    assert dump(database) == live
    assert read_model.positions() == positions



def test_a_rebuild_tells_how_far_it_has_read_after_each_batch(database, ledger, project, read_model):
    run_script(ledger)
    head = read_model.log_position()
    told: list[tuple[int, int]] = []
    rebuild(database, progress=False, batch_size=3, on_progress=lambda position, end: told.append((position, end)))
    positions = [position for position, _ in told]
    assert positions == sorted(set(positions)) and positions[-1] == head and len(told) >= head // 3
    assert {end for _, end in told} == {head}

def test_a_rebuild_reproduces_restored_profiles_with_their_usage(database, ledger, project, read_model):
    history = run_script(ledger)
    ledger.restore_profile(history.gamma)  # deleted keeping its execution
    ledger.record_execution(history.gamma, run_id="after-restore")
    ledger.delete_profile(history.gamma, delete_executions=True)
    ledger.restore_profile(history.gamma)  # deleted twice, the second time with its executions
    ledger.delete_profile(history.alpha)
    project()
    ledger.restore_profile(history.alpha)  # restored in a later batch than its deletion
    project()
    live = dump(database)
    gamma = read_model.get_profile(history.gamma)
    assert (gamma.name, gamma.execution_count, gamma.is_active) == ("Gamma", 0, False)
    assert read_model.get_profile(history.alpha).execution_count == 1
    usage = {str(dict(row)["profile_id"]): dict(row)["execution_count"] for row in live["profile_usage"]}
    assert usage[str(history.beta)] == 0  # deleted with its executions: its usage stays, emptied
    rebuild(database, progress=False)
    assert dump(database) == live


commands = st.lists(st.tuples(
    st.sampled_from(["create", "revise", "edit", "rename", "activate", "pin", "deactivate", "delete", "purge",
                     "restore", "execute", "execute without profile"]),
    st.integers(0, 5),
), min_size=1, max_size=30)


def run_commands(ledger, script: list[tuple[str, int]]) -> None:
    """Each command on the example's own profiles (by number); the ledger's refusals are part of the history."""
    names = [f"{uuid.uuid4().hex[:6]} {word}" for word in ("calm", "bold", "Calm ")]
    ids: list = []
    for command, number in script:
        profile = ids[number % len(ids)] if ids else None
        try:
            if command == "create" or profile is None:
                ids.append(ledger.create_profile({"name": names[number % 3], "steering": {number: 1.0}}).profile.id)
            elif command in ("revise", "edit", "rename"):
                changes = {"revise": {"steering": {number: 0.5, 7: 1.0}}, "edit": {"description": f"d{number}"},
                           "rename": {"name": names[number % 3], "tags": [f"t{number}"]}}[command]
                ledger.update_profile(profile, changes, bump_version=command != "edit")
            elif command in ("activate", "pin"):
                ledger.activate_profile(profile, version=1 if command == "pin" else None)
            elif command == "deactivate":
                ledger.deactivate_profile()
            elif command in ("delete", "purge"):
                ledger.delete_profile(profile, delete_executions=command == "purge")
            elif command == "restore":
                ledger.restore_profile(profile)
            else:
                ledger.record_execution(None if command == "execute without profile" else profile, seed=number)
        except LedgerError:
            pass


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=commands, copy_rows=st.integers(1, 40), batch_size=st.integers(1, 60))
def test_any_history_rebuilt_in_memory_gives_the_live_read_models(database, ledger, project, caplog, script,
                                                                    copy_rows, batch_size):
    run_commands(ledger, script)  # the database keeps the earlier examples' histories: a longer log each time
    project()
    live = dump(database)
    rebuild(database, progress=False, batch_size=batch_size, copy_rows=copy_rows)
    assert dump(database) == live
    assert "by SQL instead" not in caplog.text  # built in memory, not by the fallback


def test_after_a_rebuild_the_live_worker_continues_from_the_rebuilt_position(database, ledger, project, read_model):
    run_script(ledger)
    project()
    rebuild(database, progress=False)
    created = ledger.create_profile({"name": "after the rebuild", "steering": {1: 1.0}})
    project()
    assert read_model.get_profile(created.profile.id).name == "after the rebuild"
    assert rebuild(database, ["profiles"], progress=False) == {"profiles": read_model.log_position()}


def test_queries_keep_answering_during_a_rebuild(database, ledger, project, read_model):
    for number in range(600):
        ledger.create_profile({"name": f"profile {number:04d}", "tags": [f"t{number % 5}"], "steering": {1: 1.0}})
    project()  # ~2,400 events
    expected = read_model.list_profiles(tags=["t1"], limit=20)
    stop, answers, failures = threading.Event(), [], []

    def query_until_stopped() -> None:
        while not stop.is_set():
            try:
                answers.append(read_model.list_profiles(tags=["t1"], limit=20))
            except Exception as error:  # noqa: BLE001 - recorded for the assertion below
                failures.append(error)

    reader = threading.Thread(target=query_until_stopped)
    reader.start()
    try:
        rebuild(database, progress=False, batch_size=200)
    finally:
        stop.set()
        reader.join()
    assert not failures
    assert len(answers) > 3
    assert all(answer == expected for answer in answers)


@pytest.mark.parametrize("copy_rows", [50_000, 50])
def test_a_rebuild_in_memory_reproduces_a_long_mixed_history(database, ledger, project, read_model, copy_rows):
    from bench.rebuild import write_template

    write_template(database, profiles=40, seed=11)  # renames, pins, revisions of the active profile, deletions
    project()
    live = dump(database)
    # copy_rows=50: sealed rows go out every few batches, deletions of executions run on copied rows.
    assert rebuild(database, progress=False, batch_size=97, copy_rows=copy_rows) == read_model.positions()
    assert dump(database) == live


def test_the_fast_decoder_gives_the_events_the_mapper_gives(database, ledger):
    from projections.log import EventLog

    run_script(ledger)
    log = EventLog(database)
    try:
        by_mapper = log.read(0, 1000).events
        scanned = [event for batch in log.scan(0, 7) for event in batch.events]
        decode = log.decode
        decoded = [
            (n.id, decode(n.originator_id, n.originator_version, n.topic, n.state))
            for n in log.recorder.select_notifications(0, 1000)
        ]
    finally:
        log.close()
    for events in (scanned, decoded):
        assert [(p, type(e), vars(e)) for p, e in events] == [(p, type(e), vars(e)) for p, e in by_mapper]


def _audit_rows(database) -> list[tuple]:
    """Every audit row, its payload also as the database's own text of it (key order, number forms)."""
    store = open_store(database, pool_size=1)
    payload_text = "payload::text" if database.is_postgres else "payload"
    try:
        with store.datastore.transaction(commit=False) as curs:
            curs.execute(f"SELECT *, {payload_text} AS payload_text FROM audit_events ORDER BY position")
            return [tuple(dict(row).items()) for row in curs.fetchall()]
    finally:
        store.datastore.close()


def test_a_rebuild_reproduces_the_audit_rows_of_awkward_events(database, ledger, project, read_model):
    from ledger.domainmodel import CommandContext, acting_as

    run_script(ledger)
    with acting_as(CommandContext(actor="bøb ☃", reason=None, correlation_id="req-名前")):
        created = ledger.create_profile({
            "name": "Ünïcødé 名前 🚀",
            "description": 'said "hi" \\ back\nand a tab\t',
            "steering": {16000: -0.25, 3: 1.5, 7: 1e-07},
            "metadata": {"nested": {"deeper": [1, 2.5, None, "é", {"x": True}]}, "_type_": "a label"},
        }).profile
    with acting_as(CommandContext(actor="alice", reason="why: ünïcode", correlation_id=None)):
        ledger.update_profile(created.id, {"steering": {1: 0.1, 2: 0.2}, "metadata": {}})
        first = ledger.record_execution(None, run_id="no-profile", metadata={"emoji": "🚀"}).execution_id
        ledger.record_execution(created.id, run_id="replay", details={"prompt": "ça"}, replay_of=first)
    project()
    live = _audit_rows(database)
    assert len(live) == read_model.log_position()
    rebuild(database, progress=False)
    assert _audit_rows(database) == live


def test_the_benchmark_extends_a_smaller_log(postgres_url):
    from bench.rebuild import event_count, replicate, write_template
    from ledger.application import ProfileLedger
    from ledger.settings import Database

    database = Database(postgres_url)
    write_template(database, profiles=8, seed=3)
    template = event_count(postgres_url)
    replicate(postgres_url, 2 * template + 5)  # ends in the middle of a copy
    replicate(postgres_url, 4 * template)  # a later, longer run reuses and extends the log
    assert event_count(postgres_url) == 4 * template
    app = ProfileLedger(env=database.eventsourcing_env(pool_size=1))
    try:
        app.active_slot()  # the slot's stream goes on without a gap
    finally:
        app.close()
    assert set(rebuild(database, progress=False).values()) == {4 * template}
