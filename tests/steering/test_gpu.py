"""The batch-invariant path on CUDA: concurrent rows equal their solo runs there too (needs a GPU; skipped here)."""

from __future__ import annotations

import pytest
import torch

from steering.generate import Batch, GenerationRequest, generate, new_row
from steering.hooks import SteeringVector
from steering.models import load_model

from .conftest import LAYER

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

WORDS = "the quick brown fox jumps over a lazy dog while steering profiles change what models say".split()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_joining_a_running_batch_on_cuda_equal_their_solo_run(tiny_model_dir, dtype) -> None:
    loaded = load_model(tiny_model_dir, device="cuda", dtype=dtype)
    assert loaded.batch_invariant
    vector = SteeringVector(LAYER, torch.randn(loaded.d_model, generator=torch.Generator().manual_seed(1)) * 6)
    requests = [
        GenerationRequest(
            prompt=" ".join(WORDS[k % len(WORDS)] for k in range(1 + 9 * i)), max_tokens=6 + i,
            temperature=(0.0, 0.9)[i % 2], seed=i, steering=vector if i % 3 else None,
        )
        for i in range(10)
    ]
    batch = Batch(loaded, step_tokens=96)
    rows = []
    for request in requests:
        rows.append(new_row(loaded, request))
        batch.add(rows[-1])
        batch.step()
    while batch.rows:
        batch.step()
    assert [tuple(row.tokens) for row in rows] == [generate(loaded, [r])[0].token_ids for r in requests]
