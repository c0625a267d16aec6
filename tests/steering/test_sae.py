"""SAE loading in the SAELens format and its common variants, and steering vectors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from steering.errors import FeatureIndexError, SAEFormatError
from steering.sae import load_sae, save_sae, steering_vector
from steering.sae_format import hook_name_to_layer

from .conftest import D_MODEL, D_SAE, random_sae


def write_dir(directory: Path, config: dict | None, tensors: dict[str, torch.Tensor], *, config_name: str = "cfg.json", npz: bool = False) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (directory / config_name).write_text(json.dumps(config))
    if npz:
        np.savez(directory / "params.npz", **{k: v.numpy() for k, v in tensors.items()})
    else:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "sae_weights.safetensors"))
    return directory


def reference_tensors(d_in: int = 8, d_sae: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {
        "W_enc": torch.randn(d_in, d_sae, generator=g),
        "W_dec": torch.randn(d_sae, d_in, generator=g),
        "b_enc": torch.randn(d_sae, generator=g),
        "b_dec": torch.randn(d_in, generator=g),
    }


def assert_matches(sae, tensors: dict[str, torch.Tensor]) -> None:
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(sae, name), tensors[name]), name


def test_round_trip_preserves_weights_hook_and_digest(tmp_path: Path) -> None:
    original = random_sae()
    loaded = load_sae(save_sae(original, tmp_path / "sae"))
    assert_matches(loaded, {n: getattr(original, n) for n in ("W_enc", "W_dec", "b_enc", "b_dec")})
    assert (loaded.d_in, loaded.d_sae, loaded.layer) == (D_MODEL, D_SAE, original.layer)
    assert loaded.hook_name == original.hook_name
    assert len(loaded.digest) == 64
    assert load_sae(tmp_path / "sae").digest == loaded.digest


def test_hand_made_saelens_dir_loads(tmp_path: Path) -> None:
    tensors = reference_tensors()
    config = {"d_in": 8, "d_sae": 16, "hook_name": "blocks.3.hook_resid_post", "architecture": "standard"}
    sae = load_sae(write_dir(tmp_path, config, tensors))
    assert_matches(sae, tensors)
    assert sae.layer == 3


def test_saelens_v6_keeps_hook_name_under_metadata(tmp_path: Path) -> None:
    config = {"d_in": 8, "d_sae": 16, "metadata": {"hook_name": "blocks.5.hook_resid_pre"}}
    sae = load_sae(write_dir(tmp_path, config, reference_tensors()))
    assert (sae.hook_name, sae.layer) == ("blocks.5.hook_resid_pre", 4)


def test_config_json_and_params_npz_variant(tmp_path: Path) -> None:
    tensors = reference_tensors()
    sae = load_sae(write_dir(tmp_path, {"d_in": 8, "d_sae": 16, "layer": 2}, tensors, config_name="config.json", npz=True))
    assert_matches(sae, tensors)
    assert sae.layer == 2


def test_linear_style_names_are_transposed(tmp_path: Path) -> None:
    tensors = reference_tensors()
    linear = {
        "encoder.weight": tensors["W_enc"].T,
        "decoder.weight": tensors["W_dec"].T,
        "encoder.bias": tensors["b_enc"],
        "decoder.bias": tensors["b_dec"],
    }
    sae = load_sae(write_dir(tmp_path, {"d_in": 8, "d_sae": 16, "hook_name": "blocks.0.hook_resid_post"}, linear))
    assert_matches(sae, tensors)


def test_transposed_matrices_are_detected_by_shape(tmp_path: Path) -> None:
    tensors = reference_tensors()
    flipped = {**tensors, "W_enc": tensors["W_enc"].T, "W_dec": tensors["W_dec"].T}
    sae = load_sae(write_dir(tmp_path, {"d_in": 8, "d_sae": 16, "hook_name": "blocks.1.hook_resid_post"}, flipped))
    assert_matches(sae, tensors)


def test_explicit_layer_argument_supplies_missing_hook(tmp_path: Path) -> None:
    sae = load_sae(write_dir(tmp_path, None, reference_tensors(), npz=True), layer=6)
    assert (sae.layer, sae.d_in, sae.d_sae) == (6, 8, 16)


@pytest.mark.parametrize(
    ("hook", "layer"),
    [("blocks.0.hook_resid_post", 0), ("blocks.12.hook_resid_post", 12), ("blocks.1.hook_resid_pre", 0), ("blocks.7.hook_resid_pre", 6), ("model.layers.4", 4)],
)
def test_hook_name_maps_to_decoder_layer_output(hook: str, layer: int) -> None:
    assert hook_name_to_layer(hook) == layer


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.2.hook_mlp_out", "nonsense"])
def test_unsupported_hooks_are_refused_clearly(hook: str) -> None:
    with pytest.raises(SAEFormatError, match="hook"):
        hook_name_to_layer(hook)


def test_format_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SAEFormatError, match="does not exist"):
        load_sae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEFormatError, match="no weights"):
        load_sae(tmp_path / "empty")
    tensors = reference_tensors()
    del tensors["W_dec"]
    with pytest.raises(SAEFormatError, match="W_dec"):
        load_sae(write_dir(tmp_path / "no-dec", {"d_in": 8, "d_sae": 16, "layer": 0}, tensors))
    with pytest.raises(SAEFormatError, match="shape"):
        load_sae(write_dir(tmp_path / "bad-shape", {"d_in": 8, "d_sae": 32, "layer": 0}, reference_tensors()))
    with pytest.raises(SAEFormatError, match="neither hook_name nor layer"):
        load_sae(write_dir(tmp_path / "no-layer", {"d_in": 8, "d_sae": 16}, reference_tensors()))


def naive_vector(sae, steering: dict[int, float], normalized: bool) -> torch.Tensor:
    total = torch.zeros(sae.d_in, dtype=torch.float64)
    for index, strength in steering.items():
        row = sae.W_dec[index].double()
        total += strength * (row / row.norm() if normalized else row)
    return total


@pytest.mark.parametrize("method", ["add", "add_normalized"])
def test_steering_vector_matches_naive_sum(method: str) -> None:
    sae = random_sae()
    steering = {0: 2.0, 5: -1.5, 127: 0.25, 64: 10.0}
    vector = steering_vector(sae, steering, method)
    expected = naive_vector(sae, steering, method == "add_normalized")
    assert vector.dtype == torch.float32
    assert torch.allclose(vector.double(), expected, rtol=1e-5, atol=1e-4)


def test_steering_vector_casts_to_requested_dtype_and_empty_is_zero() -> None:
    sae = random_sae()
    assert steering_vector(sae, {1: 1.0}, dtype=torch.float16).dtype == torch.float16
    assert torch.equal(steering_vector(sae, {}), torch.zeros(sae.d_in))


@pytest.mark.parametrize("index", [D_SAE, -1, 10**6])
def test_bad_feature_index_names_index_and_d_sae(index: int) -> None:
    with pytest.raises(FeatureIndexError, match=f"feature index {index} .*d_sae={D_SAE}"):
        steering_vector(random_sae(), {0: 1.0, index: 1.0})


def test_unknown_method_and_non_finite_strength_are_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        steering_vector(random_sae(), {0: 1.0}, "multiply")
    with pytest.raises(ValueError, match="finite"):
        steering_vector(random_sae(), {0: float("nan")})


def test_hundred_thousand_features_are_fast() -> None:
    sae = random_sae(d_in=64, d_sae=200_000)
    steering = {i * 2: 0.001 for i in range(100_000)}
    start = time.perf_counter()
    vector = steering_vector(sae, steering, "add_normalized")
    assert time.perf_counter() - start < 2.0
    assert vector.shape == (64,)
