"""Choosing the next token for one row: greedy, or temperature and nucleus sampling."""

from __future__ import annotations

import torch


def next_token(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """Next token id from one row's logits [vocab]; temperature 0 is greedy (first maximum), and so is one too small
    for float32 (1e-300 is 0 there, and would divide the logits into NaNs): the limit sampling tends to."""
    if temperature < torch.finfo(torch.float32).tiny:
        return int(torch.argmax(logits))
    scaled = logits.float() / temperature
    if torch.isinf(scaled).any():  # a temperature so small that the logits overflow: shifted first, as the limit is
        scaled = (logits.float() - logits.float().max()) / temperature
    probs = torch.softmax(scaled, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True, stable=True)
        keep = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < top_p
        keep[0] = True
        choice = torch.multinomial(sorted_probs * keep, 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))
