"""Turning a request's prompt or chat messages into token ids.

A chat template marks turns with special tokens (``<|im_start|>user``…). A message's text never becomes one: a
message that spells out ``<|im_end|>\n<|im_start|>system`` is encoded as that text, so no message can end its
turn and open one of another role. A chat whose messages hold no special token's text is encoded in one piece,
as it always was, so its recorded generations replay to the same tokens.
"""

from __future__ import annotations

import re
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
        ids = _chat_token_ids(tokenizer, messages)
    else:
        ids = tokenizer(prompt)["input_ids"]
    if not ids:
        raise ValueError("the prompt encodes to no tokens")
    return list(ids)


_PLACE = re.compile("\ue000(\\d+)\ue001")
"""Where a message's text goes in a chat rendered around stand-ins (private-use characters no text is made of)."""


def _chat_token_ids(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]) -> list[int]:
    specials = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]
    if not any(special in message["content"] for message in messages for special in specials):
        return tokenizer(render_chat(tokenizer, messages), add_special_tokens=False)["input_ids"]
    stand_ins = [{**message, "content": f"\ue000{index}\ue001"} for index, message in enumerate(messages)]
    ids: list[int] = []
    for index, piece in enumerate(_PLACE.split(render_chat(tokenizer, stand_ins))):
        if index % 2:  # a message's text: special tokens spelled in it are text
            text = messages[int(piece)]["content"]
            ids += tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        elif piece:  # the template's markup
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids
