"""What the scheduler reports (no torch here: the API shows it without loading a model)."""

from __future__ import annotations

import msgspec


class SchedulerStats(msgspec.Struct, frozen=True):
    """The scheduler now, and its totals since start (``GET /api/steering/status`` shows it as it is)."""

    queued: int
    running: int
    max_batch: int
    max_queue: int
    step_tokens: int
    steps: int
    admitted: int
    refused: int
    cancelled: int
    finished: int
    failed: int
    """Requests ended by an error in a forward step (every request of that step's batch)."""
    prefill_tokens: int
    decode_tokens: int
    prefill_tokens_per_s: float
    """Over the last few seconds, as are the decoded tokens per second."""
    decode_tokens_per_s: float
    ttft_buckets: tuple[tuple[float, int], ...]
    """Time to first token from submission, a histogram: (upper bound in seconds, cumulative count)."""
    ttft_sum_s: float
    ttft_count: int
