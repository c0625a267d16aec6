"""Sparse autoencoders in the SAELens on-disk format, and steering vectors from them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .digests import files_digest
from .errors import FeatureIndexError, SAEFormatError
from .sae_format import (
    canonical_tensors,
    config_value,
    hook_name_to_layer,
    oriented,
    read_config,
    read_tensors,
    weight_files,
)

STEERING_METHODS = ("add", "add_normalized")


@dataclass(frozen=True, eq=False)
class SAE:
    """A ReLU (or JumpReLU, with `threshold`) sparse autoencoder on one layer's residual stream."""

    W_enc: torch.Tensor  # [d_in, d_sae]
    W_dec: torch.Tensor  # [d_sae, d_in]
    b_enc: torch.Tensor  # [d_sae]
    b_dec: torch.Tensor  # [d_in]
    hook_name: str
    layer: int
    digest: str = ""
    threshold: torch.Tensor | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations for residual-stream vectors `x` [..., d_in]."""
        pre = (x.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc + self.b_enc
        if self.threshold is not None:
            return pre * (pre > self.threshold)
        return torch.relu(pre)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Reconstruction [..., d_in] of feature activations."""
        return features @ self.W_dec + self.b_dec


def load_sae(directory: Path | str, *, layer: int | None = None) -> SAE:
    """Load an SAE directory; `layer` overrides (or supplies) the layer its hook name gives."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SAEFormatError(f"SAE directory {directory} does not exist")
    config = read_config(directory)
    files = weight_files(directory)
    tensors, linear_style = canonical_tensors(read_tensors(files))
    d_in = _dimension(config, "d_in", tensors, "b_dec")
    d_sae = _dimension(config, "d_sae", tensors, "b_enc")
    w_enc = oriented("W_enc", tensors["W_enc"], d_in, d_sae, "W_enc" in linear_style)
    w_dec = oriented("W_dec", tensors["W_dec"], d_sae, d_in, "W_dec" in linear_style)
    b_enc = _vector(tensors, "b_enc", d_sae)
    b_dec = _vector(tensors, "b_dec", d_in)
    threshold = _vector(tensors, "threshold", d_sae) if "threshold" in tensors else None
    hook_name, resolved_layer = _hook_and_layer(config, layer, directory)
    return SAE(
        W_enc=w_enc.float().contiguous(),
        W_dec=w_dec.float().contiguous(),
        b_enc=b_enc,
        b_dec=b_dec,
        threshold=threshold,
        hook_name=hook_name,
        layer=resolved_layer,
        digest=files_digest(files),
        config=config,
        path=directory,
    )


def save_sae(sae: SAE, directory: Path | str) -> Path:
    """Write `sae` in the SAELens format (cfg.json + sae_weights.safetensors)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold
    fp32 = {name: tensor.detach().float().contiguous().cpu() for name, tensor in tensors.items()}
    save_file(fp32, str(directory / "sae_weights.safetensors"))
    extra = {k: v for k, v in sae.config.items() if k not in {"d_in", "d_sae", "hook_name", "layer", "metadata"}}
    config = {
        **extra,
        "architecture": "jumprelu" if sae.threshold is not None else "standard",
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "hook_name": sae.hook_name,
        "layer": sae.layer,
        "metadata": {"hook_name": sae.hook_name},
    }
    (directory / "cfg.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return directory


def steering_vector(
    sae: SAE,
    steering: Mapping[int, float],
    method: str = "add",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Σ strength_i · W_dec[i] (unit-norm rows for `add_normalized`), computed in fp32 then cast."""
    if method not in STEERING_METHODS:
        raise ValueError(f"unknown steering method {method!r}; expected one of {STEERING_METHODS}")
    w_dec = sae.W_dec
    coefficients = torch.zeros(sae.d_sae, dtype=torch.float32, device=w_dec.device)
    if steering:
        indices = torch.tensor([int(i) for i in steering], dtype=torch.long)
        strengths = torch.tensor([float(s) for s in steering.values()], dtype=torch.float32)
        check_feature_indices(sae, steering)
        if not torch.isfinite(strengths).all():
            raise ValueError("steering strengths must be finite numbers")
        coefficients.index_add_(0, indices.to(w_dec.device), strengths.to(w_dec.device))
        if method == "add_normalized":
            coefficients = coefficients / w_dec.float().norm(dim=1).clamp_min(1e-12)
    vector = coefficients @ w_dec.float()
    return vector.to(device=device or w_dec.device, dtype=dtype or torch.float32)


def check_feature_indices(sae: SAE, indices: Mapping[int, float] | list[int]) -> None:
    """Raise FeatureIndexError for the first index outside 0..d_sae-1."""
    bad = next((index for index in map(int, indices) if not 0 <= index < sae.d_sae), None)
    if bad is not None:
        raise FeatureIndexError(bad, sae.d_sae)


def _dimension(config: Mapping[str, Any], key: str, tensors: Mapping[str, torch.Tensor], bias: str) -> int:
    value = config_value(config, key)
    if value is not None:
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise SAEFormatError(f"config {key} must be an integer, got {value!r}") from exc
    if bias in tensors:
        return int(tensors[bias].shape[-1])
    w_enc = tensors["W_enc"]
    if w_enc.ndim == 2 and w_enc.shape[0] != w_enc.shape[1]:
        # Without a config, the dictionary is assumed wider than the residual stream.
        return int(min(w_enc.shape) if key == "d_in" else max(w_enc.shape))
    raise SAEFormatError(f"cannot tell {key}: it is not in the config and {bias} is absent")


def _vector(tensors: Mapping[str, torch.Tensor], name: str, size: int) -> torch.Tensor:
    if name not in tensors:
        return torch.zeros(size, dtype=torch.float32)
    vector = tensors[name].float().reshape(-1)
    if vector.numel() != size:
        raise SAEFormatError(f"{name} has {vector.numel()} entries; expected {size}")
    return vector.contiguous()


def _hook_and_layer(config: Mapping[str, Any], layer: int | None, directory: Path) -> tuple[str, int]:
    hook_name = config_value(config, "hook_name")
    if layer is None and hook_name:
        return str(hook_name), hook_name_to_layer(str(hook_name))
    if layer is None:
        layer = config_value(config, "layer")
    if layer is None:
        raise SAEFormatError(f"{directory}: config gives neither hook_name nor layer; pass layer= explicitly")
    layer = int(layer)
    if layer < 0:
        raise SAEFormatError(f"layer must be >= 0, got {layer}")
    return str(hook_name or f"blocks.{layer}.hook_resid_post"), layer
