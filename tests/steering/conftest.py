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
