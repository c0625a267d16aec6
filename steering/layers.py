"""Finding a causal LM's decoder layers."""

from __future__ import annotations

from torch import nn

from .errors import LayerIndexError

LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder layers (Llama-style `model.model.layers` and common others)."""
    for path in LAYER_PATHS:
        module: object = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module
    raise TypeError(f"cannot find the decoder layers of {type(model).__name__}")


def check_layer(model: nn.Module, layer: int) -> None:
    """Raise LayerIndexError unless 0 <= layer < number of decoder layers."""
    count = len(decoder_layers(model))
    if not 0 <= layer < count:
        raise LayerIndexError(layer, count)
