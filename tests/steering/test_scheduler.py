"""Continuous batching: requests join and leave at any step, and each one's tokens equal its solo run."""

from __future__ import annotations

import threading
import time
from functools import cache

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steering.engine import SteeringEngine
from steering.generate import Batch, GenerationRequest, generate, new_row
from steering.hooks import SteeringVector
from steering.scheduler import (
    CutShortError,
    EngineClosedError,
    RequestCancelledError,
    Scheduler,
    SchedulerFullError,
)

from tests.waiting import wait_until

from .conftest import D_MODEL, LAYER

WORDS = "the quick brown fox jumps over a lazy dog while steering profiles change what models say".split()


def prompt_of(length: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(length))


VECTORS = [None] + [
    SteeringVector(layer, torch.randn(D_MODEL, generator=torch.Generator().manual_seed(seed)) * 6)
    for seed, layer in ((1, LAYER), (2, LAYER), (3, 0))
]


def request_of(length: int, profile: int, seed: int, temperature: float, max_tokens: int, stop: str = "") -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt_of(length), max_tokens=max_tokens, temperature=temperature, top_p=0.9 if seed % 2 else 1.0,
        seed=seed, steering=VECTORS[profile], stop=(stop,) if stop else (),
    )


def test_sixteen_staggered_concurrent_requests_each_equal_their_solo_run(loaded) -> None:
    requests = [
        request_of(1 + (i * 37) % 60, i % 4, 100 + i, (0.0, 0.7, 1.3)[i % 3], 3 + (i * 5) % 17, stop="e" if i == 7 else "")
        for i in range(18)
    ]
    results: dict[int, tuple[str, tuple[int, ...]]] = {}
    with SteeringEngine(loaded, max_batch=8) as engine:

        def caller(index: int) -> None:
            time.sleep(0.003 * index)
            if index % 3 == 0:
                done = []
                text = "".join(engine.stream(requests[index], on_done=done.append))
                assert text == done[0].text
                results[index] = (text, done[0].token_ids)
            else:
                result = engine.generate([requests[index]])[0]
                results[index] = (result.text, result.token_ids)

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = engine.stats()
    solo = [generate(loaded, [request])[0] for request in requests]
    assert [results[i] for i in range(len(requests))] == [(r.text, r.token_ids) for r in solo]
    assert stats.steps < sum(r.completion_tokens for r in solo) and stats.finished == len(requests)


@cache
def solo_tokens(loaded, request_key: tuple) -> tuple[int, ...]:
    return generate(loaded, [request_of(*request_key)])[0].token_ids


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.integers(0, 12),  # the step it joins at
            st.sampled_from([1, 4, 16, 17, 40]),  # prompt words (about 4 tokens each: up to 3 prefill chunks)
            st.integers(0, len(VECTORS) - 1),
            st.integers(0, 3),  # seed
            st.sampled_from([0.0, 0.8, 1.5]),
            st.integers(1, 6),  # max_tokens
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([1, 16, 70, 512]),  # step token budget
)
def test_any_schedule_gives_every_request_its_solo_tokens(loaded, arrivals, step_tokens) -> None:
    batch = Batch(loaded, step_tokens=step_tokens)
    pending = sorted(enumerate(arrivals), key=lambda item: item[1][0])
    rows = {}
    step = 0
    while pending or batch.rows:
        while pending and pending[0][1][0] <= step:
            index, (_, *key) = pending.pop(0)
            rows[index] = (tuple(key), new_row(loaded, request_of(*key)))
            batch.add(rows[index][1])
        batch.step()
        step += 1
    for key, row in rows.values():
        assert tuple(row.tokens) == solo_tokens(loaded, key)


def test_a_request_arriving_during_a_long_generation_finishes_first(loaded) -> None:
    long = GenerationRequest(prompt=prompt_of(10), max_tokens=400, temperature=0.9, seed=1, ignore_eos=True)
    short = GenerationRequest(prompt=prompt_of(60), max_tokens=5, seed=2, steering=VECTORS[1])
    with SteeringEngine(loaded) as engine:
        deltas = engine.stream(long)
        next(deltas)  # the long one is decoding
        started = time.monotonic()
        result = engine.submit(short).result(timeout=60)
        assert engine.stats().running == 1, "the long generation is still running"
        assert result.token_ids == generate(loaded, [short])[0].token_ids
        assert time.monotonic() - started < 30
        rest = "".join(deltas)
    assert rest


def test_a_failed_step_fails_its_requests_is_counted_and_the_scheduler_goes_on(loaded) -> None:
    scheduler = Scheduler(loaded, max_batch=4, max_queue=4)
    try:
        step = scheduler._batch.step

        def failing_once() -> object:
            scheduler._batch.step = step
            raise RuntimeError("CUDA error: an illegal memory access")

        scheduler._batch.step = failing_once
        with pytest.raises(RuntimeError, match="illegal memory access"):
            scheduler.submit(GenerationRequest(prompt=prompt_of(4), max_tokens=3)).future.result(timeout=30)
        assert scheduler.submit(GenerationRequest(prompt=prompt_of(4), max_tokens=3)).future.result(timeout=30)
        stats = scheduler.stats()
        assert (stats.failed, stats.finished, stats.running) == (1, 1, 0)
    finally:
        scheduler.close()


def test_a_full_queue_refuses_at_once_and_a_cancelled_request_frees_its_row(loaded) -> None:
    scheduler = Scheduler(loaded, max_batch=1, max_queue=1)
    try:
        long = GenerationRequest(prompt=prompt_of(5), max_tokens=400, seed=1, ignore_eos=True)
        running = scheduler.submit(long, stream=True)
        stream = running.deltas()
        next(stream)  # admitted and decoding
        waiting = scheduler.submit(GenerationRequest(prompt=prompt_of(3), max_tokens=3))
        with pytest.raises(SchedulerFullError) as refused:
            scheduler.submit(GenerationRequest(prompt=prompt_of(3), max_tokens=3))
        assert refused.value.retry_after_s >= 1
        assert (scheduler.stats().queued, scheduler.stats().refused) == (1, 1)
        stream.close()  # the caller goes away
        with pytest.raises(RequestCancelledError):
            running.future.result(timeout=30)
        assert waiting.future.result(timeout=30).completion_tokens >= 1
        stats = scheduler.stats()
        assert (stats.running, stats.queued, stats.cancelled, stats.finished) == (0, 0, 1, 1)
        assert stats.ttft_count == 2 and stats.decode_tokens > 0 and stats.prefill_tokens > 0
    finally:
        scheduler.close()


def test_a_caller_that_goes_away_is_answered_at_once_whether_its_request_runs_or_waits(loaded) -> None:
    """Nobody need read a stream for its row to leave: once the caller is gone (``abandoned`` set), the running
    row leaves the batch at the next step, a queued request leaves the queue, and a reader still waiting for a
    delta hears of it."""
    scheduler = Scheduler(loaded, max_batch=1, max_queue=2)
    try:
        long = GenerationRequest(prompt=prompt_of(5), max_tokens=400, seed=1, ignore_eos=True)
        gone, waiting_gone = threading.Event(), threading.Event()
        running = scheduler.submit(long, stream=True, abandoned=gone)
        deltas = running.deltas()
        next(deltas)  # admitted and decoding
        queued = scheduler.submit(long, stream=True, abandoned=waiting_gone)
        queued_deltas = queued.deltas()
        read: list[BaseException] = []
        reader = threading.Thread(target=lambda: read.extend(_raised(lambda: list(queued_deltas))))
        reader.start()  # waits for a delta that will never come
        waiting_gone.set()
        reader.join(timeout=30)
        assert not reader.is_alive() and isinstance(read[0], RequestCancelledError)
        assert scheduler.stats().queued == 0
        gone.set()
        with pytest.raises(RequestCancelledError):
            running.future.result(timeout=30)
        stats = scheduler.stats()
        assert (stats.running, stats.queued, stats.cancelled, stats.finished) == (0, 0, 2, 0)
    finally:
        scheduler.close()


def _raised(call) -> list[BaseException]:
    try:
        call()
    except BaseException as error:  # noqa: BLE001 - what the reader heard
        return [error]
    return []


def test_what_a_caller_that_left_was_given_is_handed_back_whole_or_in_part(loaded) -> None:
    """A caller that leaves hears what its first request produced: all of it when it had ended while a second
    (a compare's unsteered twin) still ran; and a stream's reader that leaves after the generation ended, but
    before its last delta, has the whole result handed to ``on_unread`` all the same."""
    short = GenerationRequest(prompt=prompt_of(5), max_tokens=2, seed=1, ignore_eos=True)
    long = GenerationRequest(prompt=prompt_of(5), max_tokens=400, seed=1, ignore_eos=True)
    with SteeringEngine(loaded) as engine:
        gone = threading.Event()

        def leave_once_the_short_one_ended() -> None:
            while engine.stats().finished < 1:
                time.sleep(0.001)
            gone.set()

        threading.Thread(target=leave_once_the_short_one_ended).start()
        with pytest.raises(RequestCancelledError) as left:
            engine.generate([short, long], abandoned=gone)
        assert left.value.request is short and left.value.partial.completion_tokens == 2
        assert left.value.partial.finish_reason == "length"
        unread: list = []
        deltas = engine.stream(short, on_unread=unread.append)
        next(deltas)
        engine.submit(short).result(timeout=30)  # one step later: the streamed one has ended too
        deltas.close()  # before its last delta was read
        assert [result.completion_tokens for result in unread] == [2]


def test_a_refusal_counts_as_waiting_only_the_requests_beyond_the_free_rows(loaded) -> None:
    scheduler = Scheduler(loaded, max_batch=2, max_queue=2)
    scheduler._thread = threading.Thread()  # not started: every request stays where submit put it
    requests = [scheduler.submit(GenerationRequest(prompt=prompt_of(3), max_tokens=3)) for _ in range(4)]
    with pytest.raises(SchedulerFullError) as refused:
        scheduler.submit(GenerationRequest(prompt=prompt_of(3), max_tokens=3))
    assert "(2 requests running, 2 waiting for a place)" in str(refused.value)  # was "0 running, 4 waiting"
    assert len(requests) == 4
    stats = scheduler.stats()  # the status and the metrics count them alike: never more waiting than the queue holds
    assert (stats.running, stats.queued) == (2, 2)  # was (0, 4)


def long_request(actor: str, seed: int, tokens: int = 4000) -> GenerationRequest:
    """A request of ``actor`` that runs for seconds on the long-context model (it never says end-of-sequence)."""
    return GenerationRequest(prompt=prompt_of(5), max_tokens=tokens, seed=seed, ignore_eos=True, actor=actor)


def test_one_actor_sending_more_cannot_shut_another_out_of_the_rows_or_the_queue(long_loaded) -> None:
    """A free row goes to the actor holding the fewest; when all is taken, the actor holding the most gives up its
    newest waiting place to one holding at least two fewer."""
    scheduler = Scheduler(long_loaded, max_batch=2, max_queue=2)

    try:
        greedy_rows = [scheduler.submit(long_request("greedy", seed), stream=True) for seed in range(2)]
        streams = [ticket.deltas() for ticket in greedy_rows]
        for stream in streams:
            next(stream)  # both rows taken, decoding
        greedy_waiting = [scheduler.submit(long_request("greedy", seed)) for seed in (2, 3)]  # every place taken
        with pytest.raises(SchedulerFullError):
            scheduler.submit(long_request("greedy", 4))  # asking for more is refused, as before
        modest = scheduler.submit(long_request("modest", 5))  # before: refused, until greedy left
        with pytest.raises(SchedulerFullError, match="gave its place"):
            greedy_waiting[1].future.result(timeout=30)  # greedy's newest waiting request, which ran nothing
        assert not greedy_waiting[0].future.done() and scheduler.stats().refused == 2
        streams[0].close()  # one of greedy's rows comes free: modest, holding none, takes it
        wait_until(modest.future.running, 30, "modest's request to take the free row")
        assert not greedy_waiting[0].future.running()  # before: the oldest waiting request took it
        assert (scheduler.stats().running, scheduler.stats().queued) == (2, 1)
    finally:
        for ticket in [*greedy_rows, *greedy_waiting, modest]:
            ticket.cancel()
        scheduler.close()


def test_a_callers_requests_give_up_their_places_together_and_never_while_one_of_them_runs(long_loaded) -> None:
    """A compare's two sides share one caller: a place is never taken from its waiting side while the other runs
    (the running side's work would be lost), and both give theirs up when neither runs."""
    scheduler = Scheduler(long_loaded, max_batch=2, max_queue=2)
    try:
        compare = threading.Event()
        alone = scheduler.submit(long_request("greedy", 1), stream=True)
        steered = scheduler.submit(long_request("greedy", 2), stream=True, abandoned=compare)
        streams = [alone.deltas(), steered.deltas()]  # (held: a stream let go gives its request up)
        for stream in streams:
            next(stream)  # both rows taken
        other = scheduler.submit(long_request("greedy", 3))
        twin = scheduler.submit(long_request("greedy", 4), abandoned=compare)  # greedy's newest waiting request
        modest = scheduler.submit(long_request("modest", 5))
        with pytest.raises(SchedulerFullError, match="gave its place"):
            other.future.result(timeout=30)  # before: the twin gave its place, and its steered side's work was lost
        assert not twin.future.done()
    finally:
        for ticket in (alone, steered, other, twin, modest):
            ticket.cancel()
        scheduler.close()

    scheduler = Scheduler(long_loaded, max_batch=1, max_queue=2)
    try:
        pair = threading.Event()
        alone = scheduler.submit(long_request("greedy", 1), stream=True)
        stream = alone.deltas()
        next(stream)
        first, second = (scheduler.submit(long_request("greedy", seed), abandoned=pair) for seed in (2, 3))
        modest = scheduler.submit(long_request("modest", 4))  # neither side of greedy's pair runs: both give way
        for side in (first, second):
            with pytest.raises(SchedulerFullError, match="gave its place"):
                side.future.result(timeout=30)
        assert not modest.future.done() and scheduler.stats().queued == 1
    finally:
        for ticket in (alone, first, second, modest):
            ticket.cancel()
        scheduler.close()


def test_at_shutdown_a_waiting_request_whose_callers_other_request_runs_keeps_its_place_until_cut_short(long_loaded):
    scheduler = Scheduler(long_loaded, max_batch=1, max_queue=2)
    try:
        compare = threading.Event()
        steered = scheduler.submit(GenerationRequest(prompt=prompt_of(5), max_tokens=4000, seed=1, ignore_eos=True),
                                   stream=True, abandoned=compare)
        stream = steered.deltas()
        next(stream)
        twin = scheduler.submit(GenerationRequest(prompt=prompt_of(5), max_tokens=4, seed=1), abandoned=compare)
        lone = scheduler.submit(GenerationRequest(prompt=prompt_of(5), max_tokens=4, seed=2))
        assert scheduler.stop_taking() == 1
        with pytest.raises(EngineClosedError):
            lone.future.result(timeout=30)  # it ran nothing
        assert not twin.future.done()  # before: refused, and the steered side was recorded nowhere
        scheduler.cut_short()
        with pytest.raises(CutShortError):
            twin.future.result(timeout=30)
        with pytest.raises(CutShortError):
            steered.future.result(timeout=30)
    finally:
        scheduler.close()


def test_a_callers_request_keeps_its_place_once_another_of_its_requests_started_even_after_it_finished(long_loaded):
    scheduler = Scheduler(long_loaded, max_batch=2, max_queue=2)
    try:
        compare = threading.Event()
        long = scheduler.submit(long_request("x", 1), stream=True)
        stream = long.deltas()
        next(stream)
        steered, twin = scheduler.submit(long_request("x", 2, tokens=500), abandoned=compare), scheduler.submit(
            long_request("x", 3), abandoned=compare)
        wait_until(steered.future.running, 30, "the steered side in the free row")
        other = scheduler.submit(long_request("z", 4))  # takes the row the steered side leaves: z holds fewer rows
        steered.future.result(timeout=30)
        wait_until(other.future.running, 30, "z's request to take the free row")
        waiting = scheduler.submit(long_request("w", 5))  # every place taken: the twin and w's
        with pytest.raises(SchedulerFullError):
            scheduler.submit(long_request("v", 6))  # before: the twin gave its place, its steered side's answer lost
        assert not twin.future.done() and not waiting.future.done()
    finally:
        for ticket in (long, steered, twin, other, waiting):
            ticket.cancel()
        scheduler.close()


def test_a_callers_second_request_is_never_refused_for_want_of_a_place_once_its_first_has_one(long_loaded):
    scheduler = Scheduler(long_loaded, max_batch=1, max_queue=1)
    try:
        long = scheduler.submit(GenerationRequest(prompt=prompt_of(5), max_tokens=4000, seed=1, ignore_eos=True),
                                stream=True)
        stream = long.deltas()
        next(stream)
        compare = threading.Event()
        sides = [scheduler.submit(GenerationRequest(prompt=prompt_of(3), max_tokens=3, seed=seed), abandoned=compare)
                 for seed in (2, 3)]  # before: the second was refused, and the first thrown away with it
        assert scheduler.stats().queued == 2
        with pytest.raises(SchedulerFullError):
            scheduler.submit(GenerationRequest(prompt=prompt_of(3), max_tokens=3, seed=4))
        long.cancel()
        assert all(side.future.result(timeout=30).completion_tokens == 3 for side in sides)
    finally:
        scheduler.close()
