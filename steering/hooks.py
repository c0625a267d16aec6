"""Adding per-row steering vectors to a decoder layer's residual-stream output.

A forward hook is installed once per (model, layer). It reads the steering for the
current forward pass from a ContextVar holding an immutable `ForwardSteering`, set
by `steering_applied` for the duration of that pass, so concurrent callers (each in
its own thread or context) never see each other's steering. With nothing set the
hook returns at once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

from .layers import check_layer, decoder_layers


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A vector to add to the output of decoder layer `layer`."""

    layer: int
    vector: torch.Tensor  # [d_model]


@dataclass(frozen=True, eq=False)
class ForwardSteering:
    """What one forward pass adds at `layer`: `delta` broadcasts to [batch, seq, d_model]."""

    layer: int
    delta: torch.Tensor


@dataclass(frozen=True, eq=False)
class SteeringBatch:
    """Per-row steering vectors for a batch at one layer; unsteered rows hold zeros."""

    layer: int
    vectors: torch.Tensor  # [batch, d_model]
    rows: tuple[bool, ...]  # which rows are steered

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[SteeringVector | None],
        *,
        d_model: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> SteeringBatch | None:
        """Stack the rows' vectors; None when no row is steered."""
        steered = [row for row in rows if row is not None]
        if not steered:
            return None
        layers = {row.layer for row in steered}
        if len(layers) > 1:
            raise ValueError(f"one batch can steer only one layer, got {sorted(layers)}")
        vectors = torch.zeros(len(rows), d_model, device=device, dtype=dtype)
        for index, row in enumerate(rows):
            if row is not None:
                if row.vector.shape != (d_model,):
                    raise ValueError(f"steering vector has shape {tuple(row.vector.shape)}; expected ({d_model},)")
                vectors[index] = row.vector.to(device=device, dtype=dtype)
        return cls(layer=layers.pop(), vectors=vectors, rows=tuple(row is not None for row in rows))

    def for_prompt(self, attention_mask: torch.Tensor) -> ForwardSteering:
        """Steering for a left-padded prompt pass: zero at padding positions."""
        mask = attention_mask.to(self.vectors.dtype).unsqueeze(-1)
        return ForwardSteering(self.layer, self.vectors.unsqueeze(1) * mask)

    def for_step(self) -> ForwardSteering:
        """Steering for a decode step, whose positions are all real tokens."""
        return ForwardSteering(self.layer, self.vectors.unsqueeze(1))

    def select(self, keep: torch.Tensor) -> SteeringBatch | None:
        """The batch restricted to row indices `keep`."""
        rows = tuple(self.rows[i] for i in keep.tolist())
        if not any(rows):
            return None
        return SteeringBatch(self.layer, self.vectors.index_select(0, keep.to(self.vectors.device)), rows)


_CURRENT: ContextVar[ForwardSteering | None] = ContextVar("steering_current", default=None)
_INSTALLED: weakref.WeakKeyDictionary[nn.Module, set[int]] = weakref.WeakKeyDictionary()
_INSTALL_LOCK = threading.Lock()


@contextmanager
def steering_applied(model: nn.Module, steering: ForwardSteering | None) -> Iterator[None]:
    """Apply `steering` (None: nothing) to forward passes of `model` inside this block."""
    if steering is not None:
        install_steering_hook(model, steering.layer)
    token = _CURRENT.set(steering)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def install_steering_hook(model: nn.Module, layer: int) -> None:
    """Register the steering hook on decoder layer `layer` (once)."""
    if layer in _INSTALLED.get(model, ()):
        return
    check_layer(model, layer)
    with _INSTALL_LOCK:
        installed = _INSTALLED.setdefault(model, set())
        if layer in installed:
            return
        decoder_layers(model)[layer].register_forward_hook(_make_hook(layer))
        installed.add(layer)


def _make_hook(layer: int):
    def add_steering(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple | None:
        steering = _CURRENT.get()
        if steering is None or steering.layer != layer:
            return None
        if isinstance(output, tuple):
            return (output[0] + steering.delta, *output[1:])
        return output + steering.delta

    return add_steering
