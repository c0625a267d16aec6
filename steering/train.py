"""Training a small ReLU SAE on one layer's residual stream, offline."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .activations import residual_activations
from .corpus import training_texts
from .digests import files_digest
from .layers import check_layer
from .models import LoadedModel
from .sae import SAE, save_sae


def collect_activations(
    loaded: LoadedModel, layer: int, texts: Sequence[str], *, max_tokens: int = 10_000, progress: bool = True
) -> torch.Tensor:
    """Up to `max_tokens` residual-stream vectors [n, d_model] (fp32, CPU) from `texts`.

    First positions and other attention-sink tokens (norm over 10x the median) are left
    out: their huge norms would dominate the reconstruction loss.
    """
    parts: list[torch.Tensor] = []
    total = 0
    batches = residual_activations(loaded, layer, texts)
    for batch in tqdm(batches, total=-(-len(texts) // 8), desc="activations", disable=not progress):
        parts.append(batch.activations[batch.position > 0].cpu())
        total += len(parts[-1])
        if total >= max_tokens:
            break
    data = torch.cat(parts)[:max_tokens]
    norms = data.norm(dim=1)
    return data[norms <= 10 * norms.median()]


def train_sae(
    loaded: LoadedModel,
    layer: int,
    d_sae: int,
    steps: int,
    *,
    texts: Sequence[str] | None = None,
    batch_size: int = 512,
    lr: float = 1e-3,
    l1_coefficient: float = 4.0,
    max_tokens: int = 10_000,
    seed: int = 0,
    output_dir: Path | str | None = None,
    progress: bool = True,
) -> SAE:
    """Train a ReLU SAE (L1 penalty, unit-norm decoder rows) on decoder layer `layer`'s output.

    Without `texts`, trains on stdlib docstrings, the Zen of Python and the model's own
    generations. With `output_dir`, the SAE is saved there in the SAELens format.
    """
    check_layer(loaded.model, layer)
    texts = list(texts) if texts is not None else training_texts(loaded)
    random.Random(seed).shuffle(texts)  # a token budget then samples every source, not just the first
    data = collect_activations(loaded, layer, texts, max_tokens=max_tokens, progress=progress)
    sae = fit_sae(data, d_sae, steps, layer=layer, batch_size=batch_size, lr=lr, l1_coefficient=l1_coefficient, seed=seed, progress=progress)
    sae = replace(sae, config={**sae.config, "model_path": str(loaded.path), "model_digest": loaded.digest})
    if output_dir is None:
        return sae
    directory = save_sae(sae, output_dir)
    return replace(sae, path=directory, digest=files_digest([directory / "sae_weights.safetensors"]))


def fit_sae(
    data: torch.Tensor,
    d_sae: int,
    steps: int,
    *,
    layer: int,
    batch_size: int = 512,
    lr: float = 1e-3,
    l1_coefficient: float = 4.0,
    seed: int = 0,
    progress: bool = True,
) -> SAE:
    """Fit a ReLU SAE to activations `data` [n, d_in].

    Inputs are centred and scaled to unit variance per dimension while training; the
    scale is folded into the biases afterwards, so the SAE reads raw activations.
    """
    d_in = data.shape[1]
    mean = data.mean(0)
    scale = float(((data - mean).pow(2).sum(1).mean() / d_in).sqrt().clamp_min(1e-6))
    data = data / scale
    generator = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_in, generator=generator)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    params = {
        "W_dec": w_dec.clone().requires_grad_(),
        "W_enc": w_dec.T.clone().requires_grad_(),
        "b_enc": torch.zeros(d_sae, requires_grad=True),
        "b_dec": (mean / scale).clone().requires_grad_(),
    }
    optimizer = torch.optim.Adam(params.values(), lr=lr)
    bar = tqdm(range(steps), desc=f"train SAE layer {layer}", disable=not progress)
    for _ in bar:
        batch = data[torch.randint(len(data), (min(batch_size, len(data)),), generator=generator)]
        features = torch.relu((batch - params["b_dec"]) @ params["W_enc"] + params["b_enc"])
        reconstruction = features @ params["W_dec"] + params["b_dec"]
        mse = (reconstruction - batch).pow(2).sum(1).mean() / d_in
        sparsity = features.sum(1).mean() / d_in
        loss = mse + l1_coefficient * sparsity
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True).clamp_min(1e-8)
        bar.set_postfix(mse=f"{mse.item():.4f}", l0=f"{(features > 0).float().sum(1).mean().item():.1f}")
    return SAE(
        W_enc=params["W_enc"].detach().clone(),
        W_dec=params["W_dec"].detach().clone(),
        b_enc=params["b_enc"].detach() * scale,
        b_dec=params["b_dec"].detach() * scale,
        hook_name=f"blocks.{layer}.hook_resid_post",
        layer=layer,
        config={"training_steps": steps, "training_tokens": len(data), "activation_scale": scale, "l1_coefficient": l1_coefficient},
    )
