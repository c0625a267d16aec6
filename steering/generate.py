"""Seeded generation with per-row steering, many requests advancing together step by step.

Reproducibility: a request with a given seed yields byte-identical text whether it runs
alone or beside any other requests. Each row has its own torch.Generator and its own
sampling ops, and `forward.PackedForward` makes each row's logits independent of the
rows beside it (per-row key/value caches, no padding, row-tiled linear layers).
`Batch` is the step loop; `generate` runs it in the caller's thread, `scheduler.Scheduler`
in a thread that requests join and leave.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import transformers

from .errors import ContextLengthError
from .forward import PREFILL_CHUNK, PackedForward, Segment, packed_forward, prefill_chunks
from .hooks import SteeringVector
from .layers import check_layer
from .models import LoadedModel
from .numerics import ROW_TILE
from .prompts import prompt_token_ids
from .sampling import next_token

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
STEP_TOKENS = 512
CACHE_HEADROOM = 64
FORWARD = f"packed; linear tiles of {ROW_TILE} rows; prefill chunks of {PREFILL_CHUNK} tokens"


@dataclass(frozen=True, eq=False)
class GenerationRequest:
    """One completion to produce: a raw `prompt` or chat `messages`, and how to sample."""

    prompt: str | None = None
    messages: Sequence[Mapping[str, str]] | None = None
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    steering: SteeringVector | None = None
    ignore_eos: bool = False  # keep going past end-of-sequence (benchmarks)
    within_context: bool = False  # refuse a prompt that leaves fewer than `max_tokens` positions (else: stop there)


@dataclass(frozen=True)
class GenerationResult:
    """The outcome of one request."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    output_sha256: str
    duration_s: float


@dataclass(eq=False)
class Row:
    """One request in flight: its prompt, cache, random state and what it has produced so far."""

    request: GenerationRequest
    prompt_ids: list[int]
    generator: torch.Generator
    steering: SteeringVector | None
    tokens: list[int] = field(default_factory=list)
    text: str | None = None  # set when the row finishes
    sampled: int = 0  # every sampled token, an end-of-sequence token included
    finish_reason: str | None = None
    prefilled: int = 0  # prompt tokens already in the cache
    pending: int | None = None  # the sampled token not yet fed back
    cache: object | None = None
    started: float = 0.0
    finished_at: float = 0.0

    @property
    def decoding(self) -> bool:
        return self.prefilled == len(self.prompt_ids)


def new_row(loaded: LoadedModel, request: GenerationRequest) -> Row:
    """A validated, tokenised row (done in the caller's thread, not in the step loop).

    Raises ValueError (LayerIndexError, ContextLengthError) for a request that cannot run."""
    if request.max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    if request.temperature < 0:
        raise ValueError("temperature must be >= 0")
    if not 0 < request.top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if any(not s for s in request.stop):
        raise ValueError("stop strings must not be empty")
    steering = request.steering
    if steering is not None:
        check_layer(loaded.model, steering.layer)
        if tuple(steering.vector.shape) != (loaded.d_model,):
            raise ValueError(f"steering vector must have shape ({loaded.d_model},)")
        steering = SteeringVector(steering.layer, steering.vector.to(device=loaded.device, dtype=loaded.dtype))
    ids = prompt_token_ids(loaded.tokenizer, request.prompt, request.messages)
    context = int(loaded.model.config.max_position_embeddings)
    if len(ids) >= context:
        raise ContextLengthError(f"the prompt has {len(ids)} tokens; the model's context holds {context}")
    if request.within_context and len(ids) + request.max_tokens > context:
        raise ContextLengthError(
            f"the prompt has {len(ids)} tokens and max_tokens asks for {request.max_tokens} more; the model's "
            f"context holds {context}: shorten the messages or ask for at most {context - len(ids)} tokens"
        )
    return Row(request, ids, torch.Generator(device=loaded.device).manual_seed(request.seed), steering)


class Batch:
    """Rows advancing together: each `step` runs one forward pass for all of them.

    A step feeds every decoding row its last token and gives prefilling rows whole prompt chunks while
    `step_tokens` lasts: one each, oldest first, round after round (the oldest always gets one). Rows join with
    `add` and leave when they finish or are dropped.
    """

    def __init__(self, loaded: LoadedModel, step_tokens: int = STEP_TOKENS) -> None:
        self.loaded = loaded
        self.forward: PackedForward = packed_forward(loaded)
        self.step_tokens = step_tokens
        self.eos = _eos_ids(loaded)
        self.rows: list[Row] = []

    def add(self, row: Row) -> None:
        # Room for the prompt and a few tokens; it doubles as needed (a function of this row's length only).
        row.cache = self.forward.new_cache(len(row.prompt_ids) + min(row.request.max_tokens, CACHE_HEADROOM))
        row.started = time.perf_counter()
        self.rows.append(row)

    def drop(self, row: Row) -> None:
        """Take a row out (it finished, its caller went away, or its step failed)."""
        if row in self.rows:
            self.rows.remove(row)
        row.cache = None

    def step(self) -> tuple[list[Row], int, int]:
        """One forward pass; the rows that finished, and the prefill and decode tokens it ran."""
        segments: list[Segment] = []
        sampling: list[Row] = []
        budget = self.step_tokens
        decode_tokens = prefill_tokens = 0
        for row in self.rows:
            if row.decoding and row.pending is not None:
                segments.append(Segment(row.cache, [row.pending], row.cache.length, row.steering, True))
                sampling.append(row)
                budget -= 1
                decode_tokens += 1
        prefilling = [row for row in self.rows if not row.decoding]
        for row, chunks in zip(prefilling, self._share(prefilling, budget)):
            length = len(row.prompt_ids)
            for start, end in chunks:
                segments.append(Segment(row.cache, row.prompt_ids[start:end], start, row.steering, end == length))
                prefill_tokens += end - start
                row.prefilled = end
            if row.decoding:
                sampling.append(row)
        if not segments:
            return [], 0, 0
        logits = self.forward(segments)
        finished: list[Row] = []
        for row, row_logits in zip(sampling, logits):
            token = next_token(row_logits, row.request.temperature, row.request.top_p, row.generator)
            _advance(self.loaded, row, token, self.eos, self.forward.max_positions)
            if row.finish_reason is not None:
                finished.append(row)
        for row in finished:
            self.drop(row)
        return finished, prefill_tokens, decode_tokens


    @staticmethod
    def _share(prefilling: list[Row], budget: int) -> list[list[tuple[int, int]]]:
        """The prompt chunks each prefilling row runs this step: one each, oldest first, round after round while
        ``budget`` tokens last, so a new prompt starts at the next step however long the prompts before it. The
        oldest always gets one, even past the budget (the rows decoding may have used it all): a prompt never waits
        for the running rows to end."""
        pending = [prefill_chunks(len(row.prompt_ids), row.prefilled) for row in prefilling]
        taken = [0] * len(prefilling)
        while any(count < len(chunks) for count, chunks in zip(taken, pending)):
            for index, chunks in enumerate(pending):
                if taken[index] == len(chunks):
                    continue
                start, end = chunks[taken[index]]
                if end - start > budget and any(taken):
                    return [chunks[:count] for count, chunks in zip(taken, pending)]
                taken[index] += 1
                budget -= end - start
        return [chunks[:count] for count, chunks in zip(taken, pending)]


def generate(loaded: LoadedModel, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
    """Results in request order, all requests run together in this thread."""
    batch = Batch(loaded)
    rows = [new_row(loaded, request) for request in requests]
    for row in rows:
        batch.add(row)
    while batch.rows:
        batch.step()
    return [result_of(row) for row in rows]


def stream_text(loaded: LoadedModel, row: Row, count: int) -> str:
    """What may be sent of `row`'s first `count` tokens: their text minus a trailing partial character and any
    tail that may begin a stop string."""
    text = loaded.tokenizer.decode(row.tokens[:count], skip_special_tokens=True).rstrip("\ufffd")
    hold = 0
    for stop in row.request.stop:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return text[: len(text) - hold]


def environment_fingerprint(loaded: LoadedModel, sae: object | None = None) -> dict[str, object]:
    """What determines the numbers: library versions, device, dtype, model and SAE digests."""
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "transformers": transformers.__version__,
        "device": str(loaded.device),
        "device_name": torch.cuda.get_device_name(loaded.device) if loaded.device.type == "cuda" else platform.processor() or platform.machine(),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "batch_invariant": loaded.batch_invariant,
        "forward": FORWARD if loaded.batch_invariant else "packed; plain linear layers",
        "model_digest": loaded.digest,
        "sae_digest": getattr(sae, "digest", None),
    }


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for source in (loaded.model.config, getattr(loaded.model, "generation_config", None), loaded.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def _advance(loaded: LoadedModel, row: Row, token: int, eos: set[int], max_positions: int) -> None:
    """Record one sampled token; text is decoded per step only when stop strings need it.

    A row also finishes (`length`) when the model's context is full."""
    row.sampled += 1
    now = time.perf_counter()
    row.pending = token
    if token in eos and not row.request.ignore_eos:
        row.finish_reason = FINISH_STOP
    else:
        row.tokens.append(token)
        if row.request.stop:
            text = _decoded(loaded, row)
            cut = min((position for position in map(text.find, row.request.stop) if position >= 0), default=None)
            if cut is not None:
                row.text = text[:cut]
                row.finish_reason = FINISH_STOP
        if row.finish_reason is None and (
            len(row.tokens) >= row.request.max_tokens or len(row.prompt_ids) + len(row.tokens) >= max_positions
        ):
            row.finish_reason = FINISH_LENGTH
    if row.finish_reason is not None:
        row.finished_at = now - row.started
        if row.text is None:
            row.text = _decoded(loaded, row)


def _decoded(loaded: LoadedModel, row: Row) -> str:
    return loaded.tokenizer.decode(row.tokens, skip_special_tokens=True)


def result_of(row: Row) -> GenerationResult:
    text = row.text or ""
    return GenerationResult(
        text=text,
        token_ids=tuple(row.tokens),
        prompt_tokens=len(row.prompt_ids),
        completion_tokens=row.sampled,
        finish_reason=row.finish_reason or FINISH_LENGTH,
        output_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
        duration_s=row.finished_at,
    )
