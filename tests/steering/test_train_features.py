"""Training a small SAE offline, and finding the tokens that activate its features."""

from __future__ import annotations

import torch

from steering.corpus import stdlib_texts, training_texts, zen_of_python
from steering.features import top_activations
from steering.sae import load_sae

from .conftest import D_MODEL, random_sae

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello world, this is a test.", "Beautiful is better than ugly."]


def test_offline_corpus_has_english_text() -> None:
    assert zen_of_python().startswith("The Zen of Python")
    assert len(stdlib_texts()) > 100


def test_train_sae_writes_a_loadable_saelens_sae(loaded, tmp_path) -> None:
    from steering.train import train_sae

    texts = training_texts(None)[:40]
    sae = train_sae(loaded, 0, 96, steps=30, texts=texts, batch_size=128, output_dir=tmp_path / "sae", progress=False)
    reloaded = load_sae(tmp_path / "sae")
    assert (reloaded.d_in, reloaded.d_sae, reloaded.layer, reloaded.hook_name) == (D_MODEL, 96, 0, "blocks.0.hook_resid_post")
    assert torch.equal(reloaded.W_dec, sae.W_dec) and reloaded.digest == sae.digest
    assert torch.allclose(reloaded.W_dec.norm(dim=1), torch.ones(96), atol=1e-4)


def test_training_reduces_reconstruction_error(loaded) -> None:
    from steering.activations import residual_activations
    from steering.train import train_sae

    texts = training_texts(None)[:40]
    short = train_sae(loaded, 1, 64, steps=2, texts=texts, progress=False, l1_coefficient=0.1)
    longer = train_sae(loaded, 1, 64, steps=150, texts=texts, progress=False, l1_coefficient=0.1)
    activations = torch.cat([b.activations for b in residual_activations(loaded, 1, texts)])

    def error(sae) -> float:
        return float((sae.decode(sae.encode(activations)) - activations).pow(2).mean())

    assert error(longer) < error(short)


def test_top_activations_lists_strongest_tokens_first(loaded) -> None:
    sae = random_sae()
    top = top_activations(loaded, sae, TEXTS, k=3, features=[0, 5, 9])
    assert sorted(top) == [0, 5, 9]
    for feature, entries in top.items():
        assert len(entries) <= 3
        values = [entry.activation for entry in entries]
        assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
        for entry in entries:
            assert entry.feature == feature and entry.context.endswith(entry.token)
            assert 0 <= entry.text_index < len(TEXTS)


def test_activations_are_read_without_running_the_layers_above(loaded) -> None:
    from steering.activations import residual_activations
    from steering.layers import decoder_layers

    above = []
    handle = decoder_layers(loaded.model)[1].register_forward_hook(lambda *_: above.append(1))
    try:
        batch = next(residual_activations(loaded, 0, TEXTS[:1]))
    finally:
        handle.remove()
    encoded = loaded.tokenizer(TEXTS[:1], return_tensors="pt")
    with torch.inference_mode():
        hidden = loaded.model(**encoded, output_hidden_states=True).hidden_states[1][0]
    assert not above  # layer 1 never ran for layer 0's activations
    assert torch.allclose(batch.activations, hidden.float(), atol=1e-5)
