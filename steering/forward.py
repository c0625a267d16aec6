"""One forward step over many requests at once, each request's numbers independent of the others.

The step packs every request's new tokens (prefill chunks and single decode tokens) into one sequence. The
per-token work (embedding, norms, projections, MLP, LM head) runs on that packed sequence; with the model's
linear layers row-tiled (numerics.py) each token's result depends on that token alone. Attention runs per
request over that request's own key/value cache, with shapes that depend only on the request: prompts are cut
into chunks of `PREFILL_CHUNK` tokens at fixed offsets, so a prompt is attended the same way however the
scheduler spreads its chunks over steps. Steering is added per request at the output of its decoder layer.
Rotary cos/sin come from one table computed at start.

This module drives the modules of a Llama-family model (Llama, Mistral, Qwen2, SmolLM...) itself rather than
calling `model(...)`, so no transformers cache object is involved.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import SteeringError
from .hooks import SteeringVector
from .models import LoadedModel

PREFILL_CHUNK = 64
CACHE_MIN_CAPACITY = 64


class UnsupportedModelError(SteeringError, ValueError):
    """The model is not a Llama-family decoder the engine can drive."""


@dataclass(eq=False)
class RowCache:
    """One request's keys and values for every layer: [layers, 2, kv_heads, capacity, head_dim]."""

    buffer: torch.Tensor
    length: int = 0


@dataclass(frozen=True, eq=False)
class Segment:
    """New tokens of one request in a step: they extend `cache` from position `start`."""

    cache: RowCache
    token_ids: Sequence[int]
    start: int
    steering: SteeringVector | None = None
    wants_logits: bool = False


class PackedForward:
    """The batch-invariant forward of one model (see the module's docstring)."""

    def __init__(self, loaded: LoadedModel) -> None:
        model = loaded.model
        inner = getattr(model, "model", None)
        needed = ("embed_tokens", "layers", "norm", "rotary_emb")
        if inner is None or not all(hasattr(inner, name) for name in needed) or not hasattr(model, "lm_head"):
            raise UnsupportedModelError(f"{type(model).__name__} is not a Llama-family causal LM")
        for layer in inner.layers:
            attention = layer.self_attn
            projections = all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj"))
            if not projections or hasattr(attention, "q_norm"):
                raise UnsupportedModelError(f"{type(model).__name__}: unsupported attention module")
        config = model.config
        self.loaded = loaded
        self.embed, self.layers, self.norm, self.lm_head = inner.embed_tokens, inner.layers, inner.norm, model.lm_head
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.scaling = float(self.layers[0].self_attn.scaling)
        self.max_positions = int(config.max_position_embeddings)
        device, dtype = loaded.device, loaded.dtype
        with torch.inference_mode():
            positions = torch.arange(self.max_positions, device=device).unsqueeze(0)
            probe = torch.zeros(1, device=device, dtype=dtype)
            cos, sin = inner.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0].contiguous(), sin[0].contiguous()  # [positions, head_dim]

    def new_cache(self, tokens: int) -> RowCache:
        """An empty cache with room for `tokens` (it grows on demand)."""
        return RowCache(self._buffer(tokens))

    def _buffer(self, tokens: int) -> torch.Tensor:
        """Room for at least `tokens` positions: CACHE_MIN_CAPACITY doubled as often as needed."""
        capacity = CACHE_MIN_CAPACITY
        while capacity < tokens:
            capacity *= 2
        shape = (len(self.layers), 2, self.kv_heads, capacity, self.head_dim)
        return torch.empty(shape, device=self.loaded.device, dtype=self.loaded.dtype)

    def _reserve(self, cache: RowCache, tokens: int) -> None:
        """Make room for `tokens` positions; the capacity depends on the request's own length only."""
        if tokens <= cache.buffer.shape[3]:
            return
        grown = self._buffer(tokens)
        grown[:, :, :, : cache.length] = cache.buffer[:, :, :, : cache.length]
        cache.buffer = grown

    @torch.inference_mode()
    def __call__(self, segments: Sequence[Segment]) -> torch.Tensor:
        """Run one step; the last-token logits [n, vocab] of the segments that want them, in order."""
        device = self.loaded.device
        bounds: list[tuple[int, int]] = []
        ids: list[int] = []
        positions: list[int] = []
        for segment in segments:
            end = segment.start + len(segment.token_ids)
            if end > self.max_positions:
                raise SteeringError(f"a request reached {end} positions; the model supports {self.max_positions}")
            self._reserve(segment.cache, end)
            bounds.append((len(ids), len(ids) + len(segment.token_ids)))
            ids.extend(segment.token_ids)
            positions.extend(range(segment.start, end))
        index = torch.tensor(positions, device=device)
        cos, sin = self.cos[index].unsqueeze(1), self.sin[index].unsqueeze(1)  # [tokens, 1, head_dim]
        hidden = self.embed(torch.tensor(ids, device=device))
        total = hidden.shape[0]
        for number, layer in enumerate(self.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = _rotate(attention.q_proj(x).view(total, self.heads, self.head_dim), cos, sin)
            k = _rotate(attention.k_proj(x).view(total, self.kv_heads, self.head_dim), cos, sin)
            v = attention.v_proj(x).view(total, self.kv_heads, self.head_dim)
            mixed = torch.empty_like(q)
            for segment, (first, last) in zip(segments, bounds):
                mixed[first:last] = self._attend(number, segment, q[first:last], k[first:last], v[first:last])
            hidden = hidden + attention.o_proj(mixed.view(total, self.heads * self.head_dim))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            for segment, (first, last) in zip(segments, bounds):
                if segment.steering is not None and segment.steering.layer == number:
                    hidden[first:last] += segment.steering.vector
        for segment in segments:
            segment.cache.length = max(segment.cache.length, segment.start + len(segment.token_ids))
        wanted = [last - 1 for segment, (_, last) in zip(segments, bounds) if segment.wants_logits]
        if not wanted:
            return hidden.new_empty((0, self.lm_head.out_features))
        final = self.norm(hidden[torch.tensor(wanted, device=device)])
        return self.lm_head(final)

    def _attend(self, layer: int, segment: Segment, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention of one request's new tokens over its own cache (written here first)."""
        start, count = segment.start, q.shape[0]
        end = start + count
        stored = segment.cache.buffer[layer]
        stored[0, :, start:end] = k.transpose(0, 1)
        stored[1, :, start:end] = v.transpose(0, 1)
        mask = None
        if count > 1:
            keys = torch.arange(end, device=q.device)
            mask = keys.unsqueeze(0) <= (start + torch.arange(count, device=q.device)).unsqueeze(1)
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1).unsqueeze(0),
            stored[0, :, :end].unsqueeze(0),
            stored[1, :, :end].unsqueeze(0),
            attn_mask=mask,
            scale=self.scaling,
            enable_gqa=self.kv_heads != self.heads,
        )
        return out[0].transpose(0, 1)


def prefill_chunks(length: int, done: int) -> list[tuple[int, int]]:
    """The fixed chunks [start, end) of a prompt of `length` tokens still to run after `done` of them."""
    return [(start, min(start + PREFILL_CHUNK, length)) for start in range(done, length, PREFILL_CHUNK)]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding (the half-split convention of Llama)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


_FORWARDS: weakref.WeakKeyDictionary[torch.nn.Module, PackedForward] = weakref.WeakKeyDictionary()
_FORWARDS_LOCK = threading.Lock()


def packed_forward(loaded: LoadedModel) -> PackedForward:
    """The one PackedForward of `loaded`'s model (its rotary table is built once)."""
    with _FORWARDS_LOCK:
        forward = _FORWARDS.get(loaded.model)
        if forward is None:
            forward = _FORWARDS[loaded.model] = PackedForward(loaded)
        return forward
