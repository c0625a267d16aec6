"""Reading the on-disk SAE variants (SAELens, Gemma Scope, nn.Linear-style names)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from .errors import SAEFormatError

CONFIG_NAMES = ("cfg.json", "config.json")
WEIGHT_ALIASES = {
    "W_enc": ("W_enc", "encoder.weight", "w_enc", "encoder_weight"),
    "W_dec": ("W_dec", "decoder.weight", "w_dec", "decoder_weight"),
    "b_enc": ("b_enc", "encoder.bias", "encoder_bias"),
    "b_dec": ("b_dec", "decoder.bias", "decoder_bias", "pre_bias"),
    "threshold": ("threshold", "log_threshold"),
}
HOOK_PATTERNS = (
    (re.compile(r"^blocks\.(\d+)\.hook_resid_post$"), 0),
    (re.compile(r"^blocks\.(\d+)\.hook_resid_pre$"), -1),
    (re.compile(r"^(?:model\.)?layers\.(\d+)(?:\.output)?$"), 0),
)


def read_config(directory: Path) -> dict[str, Any]:
    """The SAE's JSON config (`cfg.json` or `config.json`), or {} when there is none."""
    for name in CONFIG_NAMES:
        path = directory / name
        if path.is_file():
            try:
                config = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise SAEFormatError(f"{path} is not valid JSON: {exc}") from exc
            if not isinstance(config, dict):
                raise SAEFormatError(f"{path} must hold a JSON object")
            return config
    return {}


def config_value(config: Mapping[str, Any], key: str) -> Any:
    """A key from the top level or, as in SAELens v6, from `metadata`."""
    if key in config:
        return config[key]
    metadata = config.get("metadata")
    if isinstance(metadata, Mapping):
        return metadata.get(key)
    return None


def hook_name_to_layer(hook_name: str) -> int:
    """Decoder layer whose output a residual-stream hook name denotes.

    `blocks.L.hook_resid_post` is the output of layer L; `blocks.L.hook_resid_pre`
    is the output of layer L-1. `blocks.0.hook_resid_pre` (the embeddings) is refused.
    """
    for pattern, offset in HOOK_PATTERNS:
        match = pattern.match(hook_name)
        if match:
            layer = int(match.group(1)) + offset
            if layer < 0:
                raise SAEFormatError(
                    f"hook {hook_name!r} reads the embeddings, before any decoder layer; "
                    "steering the embeddings is not supported"
                )
            return layer
    raise SAEFormatError(
        f"unsupported hook name {hook_name!r}: expected blocks.L.hook_resid_post or blocks.L.hook_resid_pre"
    )


def weight_files(directory: Path) -> list[Path]:
    """The weight files of an SAE directory: `*.safetensors`, else `params.npz`."""
    preferred = directory / "sae_weights.safetensors"
    if preferred.is_file():
        return [preferred]
    found = sorted(directory.glob("*.safetensors"))
    if not found and (directory / "params.npz").is_file():
        found = [directory / "params.npz"]
    if not found:
        raise SAEFormatError(f"{directory} holds no weights: expected *.safetensors or params.npz")
    return found


def read_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of the weight files, by name."""
    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                tensors.update({name: torch.from_numpy(np.array(archive[name])) for name in archive.files})
        else:
            tensors.update(load_file(str(path)))
    return tensors


def canonical_tensors(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Tensors renamed to W_enc/W_dec/b_enc/b_dec/threshold, and which came with nn.Linear-style names."""
    result: dict[str, torch.Tensor] = {}
    linear_style: set[str] = set()
    for canonical, aliases in WEIGHT_ALIASES.items():
        alias = next((alias for alias in aliases if alias in tensors), None)
        if alias is None:
            continue
        result[canonical] = tensors[alias].exp() if alias == "log_threshold" else tensors[alias]
        if alias.endswith(".weight"):
            linear_style.add(canonical)
    for required in ("W_enc", "W_dec"):
        if required not in result:
            found = sorted(tensors)
            raise SAEFormatError(
                f"SAE weights lack {required} (looked for {', '.join(WEIGHT_ALIASES[required])}); found "
                f"{', '.join(found[:5])}" + (f" and {len(found) - 5} more" if len(found) > 5 else "")
            )
    return result, linear_style


def oriented(name: str, matrix: torch.Tensor, rows: int, cols: int, linear_style: bool) -> torch.Tensor:
    """`matrix` as [rows, cols], transposing a [cols, rows] matrix; square ones follow the naming convention."""
    if matrix.ndim != 2:
        raise SAEFormatError(f"{name} must be 2-D, got shape {tuple(matrix.shape)}")
    shape = tuple(matrix.shape)
    if rows == cols:
        return matrix.T if linear_style else matrix
    if shape == (rows, cols):
        return matrix
    if shape == (cols, rows):
        return matrix.T
    raise SAEFormatError(f"{name} has shape {shape}; expected ({rows}, {cols}) or its transpose")
