"""A small batched decode loop with per-row seeds and per-row steering.

Reproducibility: a request with a given seed yields byte-identical text whether it
runs alone or in a batch. Each row has its own torch.Generator and its own sampling
ops; the model runs with batch-invariant numerics (numerics.py) on CPU; and
`generate` batches together only requests whose prompts have the same length, so
no row is ever left-padded. (Padding changes the length of attention's reductions
and hence float rounding, so padded rows are not guaranteed identical to solo
runs.) `generate_batch` runs any rows together, padding as needed.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import transformers

from .digests import text_digest
from .hooks import SteeringBatch, SteeringVector, steering_applied
from .layers import check_layer
from .models import LoadedModel
from .prompts import prompt_token_ids
from .sampling import next_token, row_generator

FINISH_STOP = "stop"
FINISH_LENGTH = "length"


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
class _Row:
    request: GenerationRequest
    prompt_ids: list[int]
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)
    text: str | None = None  # set when the row finishes
    sampled: int = 0  # every sampled token, an end-of-sequence token included
    finish_reason: str | None = None
    finished_at: float = 0.0


def validate_request(loaded: LoadedModel, request: GenerationRequest) -> None:
    """Raise ValueError (or LayerIndexError) for a request that cannot run."""
    if request.max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    if request.temperature < 0:
        raise ValueError("temperature must be >= 0")
    if not 0 < request.top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if any(not s for s in request.stop):
        raise ValueError("stop strings must not be empty")
    if request.steering is not None:
        check_layer(loaded.model, request.steering.layer)
        if tuple(request.steering.vector.shape) != (loaded.d_model,):
            raise ValueError(f"steering vector must have shape ({loaded.d_model},)")


def generate(loaded: LoadedModel, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
    """Results in request order; rows are batched only when that cannot change their output."""
    rows = [_new_row(loaded, request) for request in requests]
    for group in _exact_batches(rows):
        for _ in _decode(loaded, group):
            pass
    return [_result(row) for row in rows]


def _exact_batches(rows: Sequence[_Row]) -> list[list[_Row]]:
    """Rows grouped so no row is padded: same prompt length, one steered layer per group.

    Unsteered rows join a steered group of their length (they get a zero vector, which
    changes nothing).
    """
    groups: dict[tuple[int, int | None], list[_Row]] = {}
    for row in rows:
        steering = row.request.steering
        groups.setdefault((len(row.prompt_ids), steering.layer if steering else None), []).append(row)
    for (length, layer), members in list(groups.items()):
        if layer is None:
            partner = next((key for key in groups if key[0] == length and key[1] is not None), None)
            if partner is not None:
                groups[partner].extend(groups.pop((length, layer)))
    return list(groups.values())


def generate_batch(loaded: LoadedModel, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
    """Run all requests as one left-padded batch (they must steer at most one layer)."""
    rows = [_new_row(loaded, request) for request in requests]
    for _ in _decode(loaded, rows):
        pass
    return [_result(row) for row in rows]


def stream_generate(
    loaded: LoadedModel, request: GenerationRequest, on_done: Callable[[GenerationResult], None] | None = None
) -> Iterator[str]:
    """Text deltas of one request as they are decided; `on_done` receives the final result."""
    row = _new_row(loaded, request)
    sent = ""
    for _ in _decode(loaded, [row]):
        safe = row.text if row.text is not None else _stream_safe(_decoded(loaded, row), row.request.stop)
        if len(safe) > len(sent):
            yield safe[len(sent):]
            sent = safe
    if on_done is not None:
        on_done(_result(row))


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
        "model_digest": loaded.digest,
        "sae_digest": getattr(sae, "digest", None),
    }


def _new_row(loaded: LoadedModel, request: GenerationRequest) -> _Row:
    validate_request(loaded, request)
    ids = prompt_token_ids(loaded.tokenizer, request.prompt, request.messages)
    return _Row(request, ids, row_generator(request.seed, loaded.device))


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for source in (loaded.model.config, getattr(loaded.model, "generation_config", None), loaded.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


@torch.inference_mode()
def _decode(loaded: LoadedModel, rows: list[_Row]) -> Iterator[None]:
    """Decode `rows` together, yielding after each step; finished rows leave the batch."""
    model, device = loaded.model, loaded.device
    started = time.perf_counter()
    eos = _eos_ids(loaded)
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    width = max(len(row.prompt_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, width - len(row.prompt_ids):] = torch.tensor(row.prompt_ids)
        attention[index, width - len(row.prompt_ids):] = 1
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    steering = SteeringBatch.from_rows(
        [row.request.steering for row in rows], d_model=loaded.d_model, device=device, dtype=loaded.dtype
    )
    live = list(rows)
    step_steering = steering.for_step() if steering else None
    with steering_applied(model, steering.for_prompt(attention) if steering else None):
        output = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = output.past_key_values
    while True:
        logits = output.logits[:, -1, :]
        chosen = [
            next_token(logits[i], row.request.temperature, row.request.top_p, row.generator)
            for i, row in enumerate(live)
        ]
        for row, token in zip(live, chosen):
            _advance(loaded, row, token, eos, started)
        yield
        keep = [i for i, row in enumerate(live) if row.finish_reason is None]
        if not keep:
            return
        if len(keep) < len(live):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            attention, positions = attention.index_select(0, index), positions.index_select(0, index)
            steering = steering.select(index) if steering else None
            step_steering = steering.for_step() if steering else None
            live = [live[i] for i in keep]
            chosen = [chosen[i] for i in keep]
        attention = torch.cat([attention, attention.new_ones((len(live), 1))], dim=1)
        positions = positions[:, -1:] + 1
        step_ids = torch.tensor(chosen, dtype=torch.long, device=device).unsqueeze(1)
        with steering_applied(model, step_steering):
            output = model(
                input_ids=step_ids, attention_mask=attention, position_ids=positions, past_key_values=cache, use_cache=True
            )
        cache = output.past_key_values


def _advance(loaded: LoadedModel, row: _Row, token: int, eos: set[int], started: float) -> None:
    """Record one sampled token; text is decoded per step only when stop strings need it."""
    row.sampled += 1
    if token in eos and not row.request.ignore_eos:
        row.finish_reason = FINISH_STOP
    else:
        row.tokens.append(token)
        if row.request.stop:
            text = _decoded(loaded, row)
            cut = _first_stop(text, row.request.stop)
            if cut is not None:
                row.text = text[:cut]
                row.finish_reason = FINISH_STOP
        if row.finish_reason is None and len(row.tokens) >= row.request.max_tokens:
            row.finish_reason = FINISH_LENGTH
    if row.finish_reason is not None:
        row.finished_at = time.perf_counter() - started
        if row.text is None:
            row.text = _decoded(loaded, row)


def _decoded(loaded: LoadedModel, row: _Row) -> str:
    return loaded.tokenizer.decode(row.tokens, skip_special_tokens=True)


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    positions = [text.find(stop) for stop in stops]
    found = [p for p in positions if p >= 0]
    return min(found) if found else None


def _stream_safe(text: str, stops: tuple[str, ...]) -> str:
    """`text` minus a trailing partial character and any tail that may begin a stop string."""
    text = text.rstrip("\ufffd")
    hold = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return text[: len(text) - hold]


def _result(row: _Row) -> GenerationResult:
    text = row.text or ""
    return GenerationResult(
        text=text,
        token_ids=tuple(row.tokens),
        prompt_tokens=len(row.prompt_ids),
        completion_tokens=row.sampled,
        finish_reason=row.finish_reason or FINISH_LENGTH,
        output_sha256=text_digest(text),
        duration_s=row.finished_at,
    )
