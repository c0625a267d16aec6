"""Turning a request's prompt or chat messages into token ids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from transformers import PreTrainedTokenizerBase


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]) -> str:
    """Chat messages as prompt text: the tokenizer's chat template, else a plain `role: content` join."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [dict(message) for message in messages], add_generation_prompt=True, tokenize=False
        )
    lines = [f"{message['role']}: {message['content']}" for message in messages]
    return "\n".join([*lines, "assistant:"])


def prompt_token_ids(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | None = None,
    messages: Sequence[Mapping[str, str]] | None = None,
) -> list[int]:
    """Token ids of a raw `prompt`, or of `messages` rendered as a chat."""
    if (prompt is None) == (messages is None):
        raise ValueError("give exactly one of prompt or messages")
    if messages is not None:
        if not messages:
            raise ValueError("messages must not be empty")
        ids = tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    return list(ids)
