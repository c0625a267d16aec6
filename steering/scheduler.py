"""Continuous batching: one thread runs `generate.Batch` steps; requests join at any step and leave when done.

A request is tokenised in the caller's thread and queued. Before every step the loop admits queued requests
while fewer than `max_batch` rows run, and drops rows whose caller went away. The queue holds at most
`max_queue` requests; beyond that `submit` raises SchedulerFullError at once (the API answers 503 with
Retry-After), so load never piles up without bound. Results are handed over through Futures and per-request
event queues; nothing else (recording, HTTP) runs on the step thread.
"""

from __future__ import annotations

import bisect
import itertools
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future

from .errors import SteeringError
from .generate import STEP_TOKENS, Batch, GenerationRequest, GenerationResult, Row, new_row, result_of, stream_text
from .models import LoadedModel
from .stats import SchedulerStats

MAX_BATCH = 32
MAX_QUEUE = 128
RATE_WINDOW_S = 10.0
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SchedulerFullError(SteeringError, RuntimeError):
    """The queue is full: the request was refused without running."""

    def __init__(self, queued: int, retry_after_s: int) -> None:
        super().__init__(f"the generation queue is full ({queued} requests waiting); retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class EngineClosedError(SteeringError, RuntimeError):
    """The engine no longer accepts requests."""


class RequestCancelledError(SteeringError, RuntimeError):
    """The request was cancelled (its caller went away) before it finished."""


class Ticket:
    """One submitted request: its Future, its stream of deltas, and a way to give it up."""

    def __init__(self, scheduler: Scheduler, row: Row, stream: bool, abandoned: threading.Event | None = None) -> None:
        self.row = row
        self.future: Future[GenerationResult] = Future()
        self.events: queue.SimpleQueue[int | None] | None = queue.SimpleQueue() if stream else None
        self.abandoned = abandoned
        self._cancelled = False
        self.submitted = time.perf_counter()
        self._scheduler = scheduler

    @property
    def cancelled(self) -> bool:
        """Given up: by :meth:`cancel`, or by its caller going away (``abandoned`` set), seen at the next step."""
        return self._cancelled or (self.abandoned is not None and self.abandoned.is_set())

    def cancel(self) -> None:
        """Give the request up: its row leaves the batch at the next step."""
        if not self.future.done():
            self._cancelled = True
            self._scheduler.wake()

    def answer(self, outcome: GenerationResult | BaseException) -> None:
        """Answer the caller with a result or an error (a reader still waiting for a delta hears of it too)."""
        if not self.future.done():  # (a Future cancelled by its holder is done)
            if isinstance(outcome, BaseException):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)
        if self.events is not None:
            self.events.put(None)

    def deltas(self, on_done: Callable[[GenerationResult], None] | None = None) -> Iterator[str]:
        """Text deltas as steps decide them (decoded in the caller's thread); cancels the request if abandoned."""
        if self.events is None:
            raise ValueError("this request was not submitted for streaming")
        loaded = self._scheduler.loaded
        sent = ""
        try:
            while True:
                count = self.events.get()
                while count is not None:  # coalesce the steps that came in meanwhile
                    try:
                        count = self.events.get_nowait()
                    except queue.Empty:
                        break
                if count is None:
                    result = self.future.result()
                    if len(result.text) > len(sent):
                        yield result.text[len(sent):]
                    if on_done is not None:
                        on_done(result)
                    return
                safe = stream_text(loaded, self.row, count)
                if len(safe) > len(sent) and safe.startswith(sent):
                    yield safe[len(sent):]
                    sent = safe
        finally:
            self.cancel()


class Scheduler:
    """The step loop of one model (see the module's docstring)."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_batch: int = MAX_BATCH,
        max_queue: int = MAX_QUEUE,
        step_tokens: int = STEP_TOKENS,
    ) -> None:
        if max_batch < 1 or max_queue < 0 or step_tokens < 1:
            raise ValueError("max_batch and step_tokens must be >= 1 and max_queue >= 0")
        self.loaded = loaded
        self.max_batch, self.max_queue, self.step_tokens = max_batch, max_queue, step_tokens
        self._batch = Batch(loaded, step_tokens)
        self._waiting: deque[Ticket] = deque()
        self._running: list[Ticket] = []
        self._condition = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._steps = self._admitted = self._refused = self._cancelled = self._finished = self._failed = 0
        self._prefill = self._decode = 0
        self._recent: deque[tuple[float, int, int, int]] = deque()  # (step start, prefill, decode, finished)
        self._ttft = [0] * len(TTFT_BUCKETS)
        self._ttft_sum, self._ttft_count = 0.0, 0

    # -- callers' side -------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, *, stream: bool = False,
               abandoned: threading.Event | None = None) -> Ticket:
        """Queue a request (validated and tokenised here); SchedulerFullError when the queue is full. Once
        ``abandoned`` is set (its caller went away), it leaves the batch at the next step, read or not."""
        ticket = Ticket(self, new_row(self.loaded, request), stream, abandoned)
        with self._condition:
            if self._closed:
                raise EngineClosedError("the engine is closed")
            free_rows = self.max_batch - len(self._running)
            if len(self._waiting) >= self.max_queue + max(free_rows, 0):
                self._refused += 1
                raise SchedulerFullError(len(self._waiting), self._retry_after())
            self._waiting.append(ticket)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="steering-scheduler", daemon=True)
                self._thread.start()
            self._condition.notify()
        return ticket

    def wake(self) -> None:
        with self._condition:
            self._condition.notify()

    def stats(self) -> SchedulerStats:
        with self._condition:
            now = time.monotonic()
            self._forget_before(now - RATE_WINDOW_S)
            window = min(RATE_WINDOW_S, now - self._recent[0][0]) if self._recent else 0.0
            prefill = sum(entry[1] for entry in self._recent)
            decode = sum(entry[2] for entry in self._recent)
            buckets = list(zip(TTFT_BUCKETS, itertools.accumulate(self._ttft)))
            return SchedulerStats(
                queued=len(self._waiting), running=len(self._running), max_batch=self.max_batch,
                max_queue=self.max_queue, step_tokens=self.step_tokens, steps=self._steps, admitted=self._admitted,
                refused=self._refused, cancelled=self._cancelled, finished=self._finished, failed=self._failed,
                prefill_tokens=self._prefill, decode_tokens=self._decode,
                prefill_tokens_per_s=round(prefill / window, 3) if window > 0 else 0.0,
                decode_tokens_per_s=round(decode / window, 3) if window > 0 else 0.0,
                ttft_buckets=tuple(buckets), ttft_sum_s=self._ttft_sum, ttft_count=self._ttft_count,
            )

    def close(self) -> None:
        """Finish the admitted and queued work, then stop the thread."""
        with self._condition:
            self._closed = True
            thread = self._thread
            self._condition.notify()
        if thread is not None:
            thread.join()

    # -- the step thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._condition:
                while not (self._waiting or self._running or self._closed):
                    self._condition.wait()
                if self._closed and not (self._waiting or self._running):
                    return
                self._admit()
            self._drop_cancelled()
            if not self._running:
                continue
            started = time.monotonic()
            try:
                finished, prefill, decode = self._batch.step()
            except BaseException as error:  # every caller in the batch must hear about a failed step
                self._fail_all(error)
                continue
            self._publish(finished, prefill, decode, started)

    def _admit(self) -> None:
        while self._waiting and len(self._running) < self.max_batch:
            ticket = self._waiting.popleft()
            if not ticket.future.set_running_or_notify_cancel():
                self._cancelled += 1
                continue
            if ticket.cancelled:
                ticket.answer(RequestCancelledError("the request was cancelled before it started"))
                self._cancelled += 1
                continue
            self._batch.add(ticket.row)
            self._running.append(ticket)
            self._admitted += 1

    def _drop_cancelled(self) -> None:
        """Rows given up leave the batch; requests given up while they wait leave the queue (their callers, still
        waiting on them, are answered at once)."""
        with self._condition:
            running = [ticket for ticket in self._running if ticket.cancelled]
            waiting = [ticket for ticket in self._waiting if ticket.cancelled]
            self._running = [ticket for ticket in self._running if ticket not in running]
            for ticket in waiting:
                self._waiting.remove(ticket)
            self._cancelled += len(running) + len(waiting)
        for ticket in running:
            self._batch.drop(ticket.row)
        for ticket in running + waiting:
            ticket.answer(RequestCancelledError("the request was cancelled"))

    def _publish(self, finished: list[Row], prefill: int, decode: int, started: float) -> None:
        done = {id(row) for row in finished}
        leaving = [ticket for ticket in self._running if id(ticket.row) in done]
        for ticket in self._running:
            if ticket.events is not None and id(ticket.row) not in done:
                ticket.events.put(len(ticket.row.tokens))
        with self._condition:
            self._running = [ticket for ticket in self._running if id(ticket.row) not in done]
            self._steps += 1
            self._finished += len(leaving)
            self._prefill += prefill
            self._decode += decode
            self._recent.append((started, prefill, decode, len(leaving)))
            self._forget_before(started - RATE_WINDOW_S)
            now = time.perf_counter()
            for ticket in self._running + leaving:
                if ticket.row.sampled == 1:  # its first token came in this step
                    self._observe_ttft(now - ticket.submitted)
        for ticket in leaving:
            ticket.answer(result_of(ticket.row))

    def _fail_all(self, error: BaseException) -> None:
        with self._condition:
            failed, self._running = self._running, []
            self._failed += len(failed)
        for ticket in failed:
            self._batch.drop(ticket.row)
            ticket.answer(error)

    def _observe_ttft(self, seconds: float) -> None:
        index = bisect.bisect_left(TTFT_BUCKETS, seconds)  # the first bound at or above it
        if index < len(TTFT_BUCKETS):
            self._ttft[index] += 1
        self._ttft_sum += seconds
        self._ttft_count += 1

    def _forget_before(self, moment: float) -> None:
        while self._recent and self._recent[0][0] < moment:
            self._recent.popleft()

    def _retry_after(self) -> int:
        """Seconds until a place is likely free: the queue ahead at the recent finishing pace (1 to 60)."""
        per_second = sum(entry[3] for entry in self._recent) / RATE_WINDOW_S
        if per_second <= 0:
            return 1
        return max(1, min(60, math.ceil(len(self._waiting) / per_second)))
