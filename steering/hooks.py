"""What a request's steering is: a vector added to the output of one decoder layer.

`forward.PackedForward` adds it per request, at every prompt and generated position of that request (the
output of decoder layer `layer`, i.e. the SAE's `blocks.{layer}.hook_resid_post`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """A vector to add to the output of decoder layer `layer`."""

    layer: int
    vector: torch.Tensor  # [d_model]
