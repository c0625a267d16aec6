"""Which tokens activate each SAE feature most: the data behind `ledger sae features`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm

from .activations import residual_activations
from .models import LoadedModel
from .sae import SAE, check_feature_indices


@dataclass(frozen=True)
class FeatureActivation:
    """One strong activation of a feature: the token, its surrounding text, and where it is."""

    feature: int
    activation: float
    token: str
    context: str
    text_index: int
    position: int


def top_activations(
    loaded: LoadedModel,
    sae: SAE,
    texts: Sequence[str],
    k: int = 5,
    *,
    features: Sequence[int] | None = None,
    context_tokens: int = 8,
    max_length: int = 128,
    progress: bool = False,
) -> dict[int, list[FeatureActivation]]:
    """For each feature (all, or `features`), its `k` strongest positive activations over `texts`, strongest first."""
    chosen = list(range(sae.d_sae)) if features is None else [int(f) for f in features]
    check_feature_indices(sae, chosen)
    columns, device = torch.tensor(chosen, dtype=torch.long), loaded.device
    encoder = replace(  # the chosen features only, on the model's device
        sae, W_enc=sae.W_enc.index_select(1, columns).to(device), b_enc=sae.b_enc[columns].to(device),
        b_dec=sae.b_dec.to(device), threshold=None if sae.threshold is None else sae.threshold[columns].to(device),
    )
    best_values = torch.full((0, len(chosen)), float("-inf"))
    best_tokens = torch.zeros((0, len(chosen)), dtype=torch.long)  # indices into the tokens seen so far
    token_ids: list[list[int]] = []
    text_of: list[torch.Tensor] = []
    position_of: list[torch.Tensor] = []
    seen = 0
    batches = residual_activations(loaded, sae.layer, texts, max_length=max_length, batch_size=4)
    for batch in tqdm(batches, total=-(-len(texts) // 4), desc="reading the texts", unit="batch", disable=not progress):
        token_ids.extend(batch.token_ids)
        text_of.append(batch.text_index)
        position_of.append(batch.position)
        acts = encoder.encode(batch.activations).cpu()
        values = torch.cat([best_values, acts])
        new_tokens = torch.arange(seen, seen + len(acts)).unsqueeze(1).expand(-1, len(chosen))
        top = values.topk(min(k, len(values)), dim=0)
        best_values = top.values
        best_tokens = torch.cat([best_tokens, new_tokens]).gather(0, top.indices)
        seen += len(acts)
    result: dict[int, list[FeatureActivation]] = {feature: [] for feature in chosen}
    if seen == 0:
        return result
    all_texts, all_positions = torch.cat(text_of), torch.cat(position_of)
    for column, feature in enumerate(chosen):
        for rank in range(best_values.shape[0]):
            value = float(best_values[rank, column])
            if value <= 0:
                break
            token = int(best_tokens[rank, column])
            text_index, position = int(all_texts[token]), int(all_positions[token])
            ids = token_ids[text_index]
            result[feature].append(
                FeatureActivation(
                    feature=feature,
                    activation=value,
                    token=loaded.tokenizer.decode([ids[position]]),
                    context=loaded.tokenizer.decode(ids[max(0, position - context_tokens) : position + 1]),
                    text_index=text_index,
                    position=position,
                )
            )
    return result
