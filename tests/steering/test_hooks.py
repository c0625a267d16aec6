"""The steering hook adds each row's vector at real positions only, and only inside its context."""

from __future__ import annotations

import threading

import pytest
import torch

from steering.errors import LayerIndexError
from steering.hooks import SteeringBatch, SteeringVector, install_steering_hook, steering_applied
from steering.layers import decoder_layers

from .conftest import D_MODEL


def layer_outputs(loaded, layer: int, input_ids, attention, steering=None) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    install_steering_hook(loaded.model, layer)  # capture hook must run after the steering hook
    handle = decoder_layers(loaded.model)[layer].register_forward_hook(lambda m, a, out: captured.append(out.clone()))
    try:
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode(), steering_applied(loaded.model, steering):
            loaded.model(input_ids=input_ids, attention_mask=attention, position_ids=positions)
    finally:
        handle.remove()
    return captured[0]


def padded_batch():
    input_ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12], [0, 0, 0, 13, 14]])
    attention = (input_ids != 0).long()
    return input_ids, attention


@pytest.mark.parametrize("layer", [0, 1])
def test_hook_adds_row_vectors_only_at_non_pad_positions(loaded, layer: int) -> None:
    input_ids, attention = padded_batch()
    vectors = [SteeringVector(layer, torch.full((D_MODEL,), 2.0)), None, SteeringVector(layer, torch.arange(D_MODEL, dtype=torch.float32))]
    batch = SteeringBatch.from_rows(vectors, d_model=D_MODEL, device=loaded.device, dtype=loaded.dtype)
    plain = layer_outputs(loaded, layer, input_ids, attention)
    steered = layer_outputs(loaded, layer, input_ids, attention, batch.for_prompt(attention))
    difference = steered - plain
    for row, vector in enumerate(vectors):
        for position in range(input_ids.shape[1]):
            expected = vector.vector if vector is not None and attention[row, position] else torch.zeros(D_MODEL)
            assert torch.allclose(difference[row, position], expected, atol=1e-5), (row, position)


def test_no_steering_outside_the_context(loaded) -> None:
    input_ids, attention = padded_batch()
    batch = SteeringBatch.from_rows([SteeringVector(0, torch.ones(D_MODEL))] * 3, d_model=D_MODEL, device=loaded.device, dtype=loaded.dtype)
    before = layer_outputs(loaded, 0, input_ids, attention)
    layer_outputs(loaded, 0, input_ids, attention, batch.for_prompt(attention))
    after = layer_outputs(loaded, 0, input_ids, attention)
    assert torch.equal(before, after)


def test_steering_at_another_layer_leaves_this_one_alone(loaded) -> None:
    input_ids, attention = padded_batch()
    batch = SteeringBatch.from_rows([SteeringVector(1, torch.ones(D_MODEL))] * 3, d_model=D_MODEL, device=loaded.device, dtype=loaded.dtype)
    assert torch.equal(layer_outputs(loaded, 0, input_ids, attention), layer_outputs(loaded, 0, input_ids, attention, batch.for_prompt(attention)))


def test_unsteered_batch_is_none() -> None:
    assert SteeringBatch.from_rows([None, None], d_model=D_MODEL, device=torch.device("cpu"), dtype=torch.float32) is None


def test_layer_out_of_range_is_a_clear_error(loaded) -> None:
    with pytest.raises(LayerIndexError, match="layer 2 is out of range .* 2 decoder layers"):
        install_steering_hook(loaded.model, 2)


def test_contexts_in_threads_do_not_see_each_other(loaded) -> None:
    input_ids, attention = padded_batch()
    expected_plain = layer_outputs(loaded, 0, input_ids, attention)
    batch = SteeringBatch.from_rows([SteeringVector(0, torch.ones(D_MODEL) * 50)] * 3, d_model=D_MODEL, device=loaded.device, dtype=loaded.dtype)
    inside = threading.Event()
    release = threading.Event()
    seen: list[torch.Tensor] = []

    def steered_thread() -> None:
        with steering_applied(loaded.model, batch.for_prompt(attention)):
            inside.set()
            release.wait(5)

    worker = threading.Thread(target=steered_thread)
    worker.start()
    inside.wait(5)
    seen.append(layer_outputs(loaded, 0, input_ids, attention))
    release.set()
    worker.join()
    assert torch.equal(seen[0], expected_plain)
