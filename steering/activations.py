"""Reading residual-stream activations at a decoder layer's output for a set of texts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .layers import check_layer, decoder_layers
from .models import LoadedModel


@dataclass(frozen=True, eq=False)
class ActivationBatch:
    """Activations [n, d_model] of the real (non-pad) tokens of some texts, with where each came from."""

    activations: torch.Tensor
    text_index: torch.Tensor  # [n]
    position: torch.Tensor  # [n], token position within its text
    token_ids: list[list[int]]  # per text in this batch: its token ids


class _Captured(Exception):
    """Raised by the capturing hook: what was wanted has been read, the rest of the forward pass is skipped."""


@torch.inference_mode()
def residual_activations(
    loaded: LoadedModel, layer: int, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 8
) -> Iterator[ActivationBatch]:
    """Layer `layer`'s output for every real token of `texts`, batch by batch.

    The forward pass stops at that layer: the layers above it (half the model for a middle layer) are not run.
    """
    check_layer(loaded.model, layer)
    captured: list[torch.Tensor] = []

    def capture(module: torch.nn.Module, args: object, output: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _Captured

    handle = decoder_layers(loaded.model)[layer].register_forward_hook(capture)
    try:
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start : start + batch_size])
            encoded = loaded.tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
            attention = encoded["attention_mask"].to(loaded.device)
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            captured.clear()
            with contextlib.suppress(_Captured):
                loaded.model(input_ids=encoded["input_ids"].to(loaded.device), attention_mask=attention,
                             position_ids=positions, use_cache=False, logits_to_keep=1)
            real = attention.bool()
            rows, _ = real.nonzero(as_tuple=True)
            token_ids = [ids[mask].tolist() for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"].bool())]
            yield ActivationBatch(
                activations=captured[0][real].float(),
                text_index=rows.cpu() + start,
                position=positions[real].cpu(),
                token_ids=token_ids,
            )
    finally:
        handle.remove()
