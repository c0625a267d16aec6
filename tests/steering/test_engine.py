"""SteeringEngine: cached vectors, an atomically swapped active profile, and concurrent batching."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from steering.engine import EngineClosedError, SteeringEngine
from steering.errors import FeatureIndexError, LayerIndexError
from steering.generate import GenerationRequest, generate

from .conftest import D_SAE, LAYER, random_sae

PROFILES = [{3: 6.0, 17: -4.0}, {40: 8.0}, {5: -7.0, 99: 3.0}]


@pytest.fixture()
def engine(loaded):
    with SteeringEngine(loaded, random_sae(), model_id="tiny", sae_id="tiny-sae") as engine:
        yield engine


def test_vectors_are_cached_per_profile_version_and_method(engine) -> None:
    first = engine.snapshot("p1", 1, PROFILES[0])
    assert engine.snapshot("p1", 1, PROFILES[0]).vector is first.vector
    assert engine.snapshot("p1", 2, PROFILES[1]).vector is not first.vector
    assert engine.snapshot("p1", 1, PROFILES[0], method="add_normalized").vector is not first.vector
    assert first.layer == LAYER and first.vector.dtype == engine.loaded.dtype


def test_active_snapshot_is_set_and_cleared(engine) -> None:
    assert engine.active is None
    snapshot = engine.set_active("p1", 3, PROFILES[0])
    assert engine.active is snapshot and (snapshot.profile_id, snapshot.version) == ("p1", 3)
    engine.clear_active()
    assert engine.active is None


def test_compatibility_warnings_and_errors(engine) -> None:
    assert engine.check_compatibility("tiny", "tiny-sae", LAYER, PROFILES[0]) == []
    warnings = engine.check_compatibility("other-model", "other-sae", 0)
    assert len(warnings) == 3 and "other-model" in warnings[0]
    with pytest.raises(LayerIndexError):
        engine.check_compatibility("tiny", "tiny-sae", 5)
    with pytest.raises(FeatureIndexError, match=f"d_sae={D_SAE}"):
        engine.check_compatibility("tiny", "tiny-sae", LAYER, {D_SAE: 1.0})


def test_concurrent_submissions_each_equal_their_solo_run(engine, loaded) -> None:
    snapshots = [None] + [engine.snapshot(f"p{i}", 1, steering) for i, steering in enumerate(PROFILES)]
    requests = [
        GenerationRequest(
            prompt=["Hello world", "Once upon a time"][i % 2],
            max_tokens=8,
            temperature=0.0 if i % 3 == 0 else 0.9,
            seed=i,
            steering=snapshots[i % 4],
        )
        for i in range(8)
    ]
    results: dict[int, str] = {}
    barrier = threading.Barrier(len(requests))

    def caller(index: int) -> None:
        barrier.wait()
        results[index] = engine.generate([requests[index]])[0].text

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    solo = [generate(loaded, [request])[0].text for request in requests]
    assert [results[i] for i in range(len(requests))] == solo
    stats = engine.stats()
    assert stats.steps < sum(r.max_tokens for r in requests), "concurrent requests should share steps"


def test_steered_and_active_requests_differ_from_plain(engine) -> None:
    plain = GenerationRequest(prompt="Tell me about sparse autoencoders please", max_tokens=10)
    engine.set_active("p0", 1, PROFILES[0])
    steered, unsteered = engine.generate([replace(plain, steering=engine.active), plain])
    assert steered.token_ids != unsteered.token_ids
    assert "".join(engine.stream(replace(plain, steering=engine.active))) == steered.text


def test_invalid_requests_fail_at_submit_and_closed_engine_refuses(loaded) -> None:
    engine = SteeringEngine(loaded)
    with pytest.raises(ValueError, match="max_tokens"):
        engine.submit(GenerationRequest(prompt="Hi", max_tokens=0))
    engine.close()
    with pytest.raises(EngineClosedError):
        engine.submit(GenerationRequest(prompt="Hi"))


def test_engine_without_sae_cannot_make_snapshots(loaded) -> None:
    with SteeringEngine(loaded) as engine, pytest.raises(Exception, match="no SAE"):
        engine.snapshot("p", 1, {0: 1.0})
