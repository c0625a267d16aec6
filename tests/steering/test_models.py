"""Model loading (any HF causal LM directory) and the offline default model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steering.generate import GenerationRequest, generate
from steering.hooks import SteeringVector
from steering.models import DEFAULT_MODEL_NAME, fetch_default_model, load_model, model_digest

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def test_loaded_model_is_ready_for_batched_generation(loaded, tiny_model_dir) -> None:
    assert not loaded.model.training
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert loaded.batch_invariant and not any(type(m) is torch.nn.Linear for m in loaded.model.modules())
    assert (loaded.num_layers, loaded.d_model) == (2, 64)


def test_digest_is_stable_and_cached(tiny_model_dir) -> None:
    first = model_digest(tiny_model_dir)
    assert len(first) == 64 and model_digest(tiny_model_dir) == first
    assert (tiny_model_dir / "steering_digest.json").is_file()


def fetch_with_the_cli(models_dir: Path) -> Path:
    """`ledger models fetch`, as `scripts/serve.sh` runs it on first use: exit 0 and the model's directory on stdout."""
    ledger = Path(sys.executable).with_name("ledger")
    done = subprocess.run([str(ledger), "models", "fetch", "--models-dir", str(models_dir)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (done.returncode, done.stderr[-2000:])
    return Path(done.stdout.strip())


def test_fetch_returns_an_existing_conversion_without_downloading(tmp_path, tiny_model_dir, monkeypatch) -> None:
    target = tmp_path / DEFAULT_MODEL_NAME
    target.symlink_to(tiny_model_dir, target_is_directory=True)
    monkeypatch.setattr("steering.models._download_gguf", lambda scratch: pytest.fail("must not download"))
    assert fetch_default_model(tmp_path) == target
    assert fetch_with_the_cli(tmp_path) == target


@pytest.mark.slow
def test_default_model_fetches_loads_and_generates() -> None:
    target = DEFAULT_MODELS_DIR / DEFAULT_MODEL_NAME
    if not target.is_dir() and os.environ.get("LEDGER_TEST_DEFAULT_MODEL") != "1":
        pytest.skip("default model not present; set LEDGER_TEST_DEFAULT_MODEL=1 to fetch it")
    loaded = load_model(fetch_with_the_cli(DEFAULT_MODELS_DIR), device="cpu")
    assert (loaded.num_layers, loaded.d_model) == (30, 576)
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token == "<|im_end|>"
    result = generate(loaded, [GenerationRequest(messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=24)])[0]
    assert "4" in result.text


@pytest.mark.slow
def test_default_model_batch_equals_alone() -> None:
    target = DEFAULT_MODELS_DIR / DEFAULT_MODEL_NAME
    if not target.is_dir():
        pytest.skip("default model not present")
    loaded = load_model(target, device="cpu")
    vector = SteeringVector(15, torch.randn(loaded.d_model, generator=torch.Generator().manual_seed(0)) * 4)
    requests = [
        GenerationRequest(messages=[{"role": "user", "content": "Name a colour."}], max_tokens=6, temperature=t, seed=s, steering=v)
        for t, s, v in [(0.0, 0, None), (0.9, 1, vector), (0.9, 2, None), (0.0, 3, vector)]
    ]
    together = generate(loaded, requests)
    assert [r.token_ids for r in together] == [generate(loaded, [r])[0].token_ids for r in requests]
