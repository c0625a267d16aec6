"""The packed forward computes what the model itself computes: logits of a plain `model(...)` call, and with
steering, those of a plain call whose decoder layer `layer` has the vector added to its output."""

from __future__ import annotations

import pytest
import torch

from steering.forward import PREFILL_CHUNK, Segment, UnsupportedModelError, packed_forward, prefill_chunks
from steering.hooks import SteeringVector
from steering.layers import decoder_layers

from .conftest import D_MODEL

IDS = [(7 * i + 3) % 250 + 3 for i in range(PREFILL_CHUNK * 2 + 5)]  # three prefill chunks


def plain_logits(loaded, ids: list[int], steering: SteeringVector | None = None) -> torch.Tensor:
    handle = None
    if steering is not None:
        layer = decoder_layers(loaded.model)[steering.layer]
        handle = layer.register_forward_hook(lambda module, args, out: out + steering.vector)
    try:
        with torch.inference_mode():
            return loaded.model(input_ids=torch.tensor([ids])).logits[0]
    finally:
        if handle is not None:
            handle.remove()


def packed_logits(loaded, ids: list[int], steering: SteeringVector | None = None) -> list[torch.Tensor]:
    forward = packed_forward(loaded)
    cache = forward.new_cache(len(ids))
    return [
        forward([Segment(cache, ids[start:end], start, steering, True)])[0]
        for start, end in prefill_chunks(len(ids), 0)
    ]


@pytest.mark.parametrize("layer", [None, 0, 1])
def test_packed_forward_matches_the_model_itself_steered_or_not(loaded, layer) -> None:
    steering = None if layer is None else SteeringVector(layer, torch.linspace(-3, 3, D_MODEL))
    expected = plain_logits(loaded, IDS, steering)
    chunk_ends = [end for _, end in prefill_chunks(len(IDS), 0)]
    for end, logits in zip(chunk_ends, packed_logits(loaded, IDS, steering)):
        torch.testing.assert_close(logits, expected[end - 1], atol=1e-4, rtol=1e-4)
    if steering is not None:
        assert not torch.allclose(expected[-1], plain_logits(loaded, IDS)[-1], atol=1e-2)


def test_a_model_that_is_not_llama_shaped_is_refused(loaded) -> None:
    class Other:
        model = loaded.model.model.embed_tokens
        config = loaded.model.config

    with pytest.raises(UnsupportedModelError):
        packed_forward(type("Loaded", (), {"model": Other(), "device": loaded.device, "dtype": loaded.dtype})())
