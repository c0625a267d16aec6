"""Exceptions raised by the steering package."""

from __future__ import annotations


class SteeringError(Exception):
    """Base class for steering errors."""


class SAEFormatError(SteeringError, ValueError):
    """An SAE directory is missing files or holds inconsistent data."""


class ModelFormatError(SteeringError, ValueError):
    """A model directory holds no model (or no tokenizer) that can be loaded."""


class DeviceError(SteeringError, ValueError):
    """A device or dtype (``LEDGER_DEVICE``, ``LEDGER_DTYPE``) this machine's torch cannot compute with."""


class FeatureIndexError(SteeringError, ValueError):
    """A steering feature index is outside the SAE's dictionary."""

    def __init__(self, index: int, d_sae: int) -> None:
        super().__init__(f"feature index {index} is out of range for an SAE with d_sae={d_sae} (valid: 0..{d_sae - 1})")
        self.index = index
        self.d_sae = d_sae


class LayerIndexError(SteeringError, ValueError):
    """A layer index is outside the model's decoder layers."""

    def __init__(self, layer: int, num_layers: int) -> None:
        super().__init__(f"layer {layer} is out of range for a model with {num_layers} decoder layers (valid: 0..{num_layers - 1})")
        self.layer = layer
        self.num_layers = num_layers


class ModelFetchError(SteeringError, RuntimeError):
    """The default model could not be fetched or converted."""


class ContextLengthError(SteeringError, ValueError):
    """A prompt longer than the model's context, or one that leaves less room than the tokens asked for."""
