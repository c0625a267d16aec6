"""Generations as executions: the steering projector follows the log; runs are recorded and replay exactly."""

from __future__ import annotations

import threading
import time

import pytest

from ledger.application import ProfileLedger
from ledger.errors import ProfileIncompatibleError, ProfileNotFoundError
from ledger.settings import Database
from projections.follow import LogFollower
from steering.engine import SteeringEngine
from steering.projector import SteeringProjector
from steering.runs import Completion, GenerationService
from steering.sae import load_sae
from tests.steering.conftest import D_SAE, LAYER

PROMPT = [{"role": "user", "content": "tell me about the sea"}]


@pytest.fixture
def stack(loaded, sae_dir, tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger = ProfileLedger(env=database.eventsourcing_env())
    engine = SteeringEngine(loaded, load_sae(sae_dir), model_id="tiny", sae_id="tiny-sae")
    service = GenerationService(ledger, engine)
    projector = SteeringProjector(engine, service.spec_at)
    service.projector = projector
    follower = LogFollower(database, projector)
    ledger.add_listener(follower.wake)
    stop = threading.Event()
    thread = threading.Thread(target=follower.run, args=(stop,), daemon=True)
    thread.start()
    yield ledger, engine, service, projector
    stop.set()
    thread.join(5)
    follower.close()
    engine.close()
    ledger.close()


def profile(ledger, name, steering, **fields):
    return ledger.create_profile({"name": name, "steering": steering, "layer": LAYER, **fields}).profile.id


def completion(**fields) -> Completion:
    return Completion(messages=PROMPT, **{"max_tokens": 12, "temperature": 0.0, "seed": 7, **fields})


def test_the_projector_installs_replaces_and_removes_the_active_steering(stack):
    ledger, engine, _, projector = stack
    pid = profile(ledger, "strong", {3: 8.0})
    outcome = ledger.activate_profile(pid)
    assert projector.wait_for(outcome.position, 2)
    assert (engine.active.profile_id, engine.active.version) == (str(pid), 1)
    revised = ledger.update_profile(pid, {"steering": {3: 8.0, 5: -4.0}})
    assert projector.wait_for(revised.position, 2)
    assert engine.active.version == 2
    status = projector.status()
    assert (status.profile_id, status.version, status.position, status.feature_count) == (pid, 2, revised.position, 2)
    pinned = ledger.activate_profile(pid, version=1)
    assert projector.wait_for(pinned.position, 2) and engine.active.version == 1
    ledger.update_profile(pid, {"steering": {4: 1.0}})  # pinned: a revision does not move the hook
    assert engine.active.version == 1
    off = ledger.deactivate_profile()
    assert projector.wait_for(off.position, 2) and engine.active is None


def test_same_request_and_seed_give_identical_text_and_steering_changes_it(stack):
    ledger, _, service, projector = stack
    pid = profile(ledger, "strong", {i: 30.0 for i in range(0, D_SAE, 7)})
    plain_a = service.complete(completion())
    plain_b = service.complete(completion())
    assert plain_a.result.text == plain_b.result.text and plain_a.profile_id is None
    steered = service.complete(completion(profile="STRONG"))
    assert steered.profile_id == pid and steered.profile_version == 1
    assert steered.result.text != plain_a.result.text
    activation = ledger.activate_profile(pid)
    projector.wait_for(activation.position, 2)
    assert service.complete(completion()).result.text == steered.result.text  # the active profile applies
    off = ledger.deactivate_profile()
    projector.wait_for(off.position, 2)
    assert service.complete(completion()).result.text == plain_a.result.text  # deactivation restores it exactly


def test_compare_returns_steered_and_unsteered_side_by_side(stack):
    ledger, _, service, _ = stack
    profile(ledger, "strong", {i: 30.0 for i in range(0, D_SAE, 7)})
    outcome = service.complete(completion(profile="strong"), compare=True)
    assert outcome.unsteered is not None
    assert outcome.unsteered.text == service.complete(completion()).result.text
    assert outcome.result.text != outcome.unsteered.text


def test_recorded_generations_replay_to_the_same_output(stack):
    ledger, _, service, _ = stack
    a = profile(ledger, "a", {1: 12.0})
    b = profile(ledger, "b", {2: -12.0, 9: 6.0})
    originals = []
    for i in range(20):
        name = [None, "a", "b"][i % 3]
        sampled = i % 2 == 0
        originals.append(service.complete(completion(
            profile=name, seed=100 + i, temperature=0.9 if sampled else 0.0, top_p=0.9 if sampled else 1.0,
        )))
        if i == 10:
            ledger.update_profile(a, {"steering": {1: -12.0}})  # later versions must not affect replays
    for original in originals:
        replay = service.replay(original.execution_id)
        assert replay.reproduced, original
        assert replay.replay.result.output_sha256 == original.result.output_sha256
        recorded = ledger.get_execution(replay.replay.execution_id)
        assert (recorded.replay_of, recorded.details["reproduced"]) == (original.execution_id, True)
        assert "reproduced" not in ledger.get_execution(original.execution_id).details  # (no replay)
        assert not replay.warnings
    del b


def test_profiles_that_cannot_apply_are_clear_errors(stack):
    ledger, _, service, _ = stack
    profile(ledger, "too far", {D_SAE + 5: 1.0})
    with pytest.raises(ProfileIncompatibleError, match=str(D_SAE + 5)):
        service.complete(completion(profile="too far"))
    with pytest.raises(ProfileNotFoundError):
        service.complete(completion(profile="nobody"))
    deep = profile(ledger, "deep", {1: 1.0}, layer=99)
    with pytest.raises(ProfileIncompatibleError):
        service.compatibility_warnings(service.spec_at(deep, None))
    other = profile(ledger, "other model", {1: 1.0}, model_id="someone-else")
    assert any("someone-else" in w for w in service.compatibility_warnings(service.spec_at(other, None)))


def test_activation_reaches_the_hook_quickly(stack):
    ledger, engine, _, projector = stack
    ids = [profile(ledger, f"p{i}", {i: 1.0}) for i in range(10)]
    delays = []
    for pid in ids:
        started = time.perf_counter()
        outcome = ledger.activate_profile(pid)
        assert projector.wait_for(outcome.position, 2)
        delays.append(time.perf_counter() - started)
        assert engine.active.profile_id == str(pid)
    assert max(delays) < 1.0  # the figure itself is a benchmark; here: it is event-driven, not polled slowly


def test_a_request_without_a_profile_uses_an_activation_just_answered_by_another_process(stack, tmp_path):
    ledger, _, service, _ = stack
    pid = profile(ledger, "elsewhere", {3: 8.0})
    other = ProfileLedger(env=Database(f"sqlite:///{tmp_path / 'ledger.sqlite'}").eventsourcing_env())
    try:
        other.activate_profile(pid)  # another server: no save in this process wakes the projector
        spec = service.resolve(None, None)  # at once, as a client would after the activation's answer
    finally:
        other.close()
    assert spec is not None and spec.profile_id == pid
