"""Batch-invariant numerics: a row's result must not depend on the rows beside it.

On CPU, MKL's sgemm picks different kernels (and so different summation orders)
for 1, 2-3 and >=4 rows, and for tail rows when the row count is not a multiple
of 4. `RowStableLinear` pads every call to a multiple of 8 rows (at least 8), which
makes each row's result a function of that row alone. Attention uses the eager
implementation, whose per-(row, head) matmuls are likewise row-independent; the
fused SDPA kernel on CPU is not (it splits work by batch size and thread count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ROW_MULTIPLE = 8


class RowStableLinear(nn.Linear):
    """nn.Linear whose output rows do not depend on how many rows are computed together."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x.shape[-1]
        rows = x.numel() // features
        padded = max(ROW_MULTIPLE, -(-rows // ROW_MULTIPLE) * ROW_MULTIPLE)
        flat = x.reshape(rows, features)
        if padded != rows:
            flat = torch.cat([flat, flat.new_zeros(padded - rows, features)])
        return F.linear(flat, self.weight, self.bias)[:rows].reshape(*x.shape[:-1], -1)


def make_batch_invariant(model: nn.Module) -> nn.Module:
    """Switch every plain nn.Linear of `model` to RowStableLinear, in place."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = RowStableLinear
    return model


def is_batch_invariant(model: nn.Module) -> bool:
    """True when no plain nn.Linear is left in `model`."""
    return not any(type(module) is nn.Linear for module in model.modules())
