"""Shared fixtures: a tiny random Llama, its loaded form, and a random SAE on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steering.models import LoadedModel, load_model
from steering.sae import SAE, save_sae
from steering.tiny import build_tiny_model

D_MODEL = 64
D_SAE = 128
LAYER = 1


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"), layers=2, hidden=D_MODEL)


@pytest.fixture(scope="session")
def long_context_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with room for generations long enough to disconnect from in the middle, and an end-of-sequence
    logit of zero (others reach about +6), so a greedy answer never ends early."""
    from transformers import LlamaForCausalLM

    directory = build_tiny_model(tmp_path_factory.mktemp("long-context"), layers=2, hidden=D_MODEL, max_positions=4200)
    model = LlamaForCausalLM.from_pretrained(directory)
    with torch.no_grad():
        model.lm_head.weight[model.config.eos_token_id] = 0.0
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def long_loaded(long_context_model_dir: Path) -> LoadedModel:
    """:func:`long_context_model_dir` loaded: rows of 4,000 tokens run for seconds (long enough to act meanwhile)."""
    torch.set_num_threads(1)
    return load_model(long_context_model_dir, device="cpu")


@pytest.fixture(scope="session")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    torch.set_num_threads(1)  # a tiny model gains nothing from threads, and busy-waiting OpenMP threads suffer on a shared CPU
    return load_model(tiny_model_dir, device="cpu")


def random_sae(d_in: int = D_MODEL, d_sae: int = D_SAE, layer: int = LAYER, seed: int = 0) -> SAE:
    generator = torch.Generator().manual_seed(seed)
    return SAE(
        W_enc=torch.randn(d_in, d_sae, generator=generator),
        W_dec=torch.randn(d_sae, d_in, generator=generator),
        b_enc=torch.randn(d_sae, generator=generator),
        b_dec=torch.randn(d_in, generator=generator),
        hook_name=f"blocks.{layer}.hook_resid_post",
        layer=layer,
    )


@pytest.fixture(scope="session")
def sae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_sae(random_sae(), tmp_path_factory.mktemp("sae"))
