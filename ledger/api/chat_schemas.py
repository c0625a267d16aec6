"""Bodies of the OpenAI-compatible routes and the steering routes (msgspec Structs).

The chat request accepts the OpenAI parameters clients commonly send, null as their default; those this server
does not implement only at the value that changes nothing (``n`` 1, penalties 0, no logprobs, no logit bias, a
text response), and anything else is refused like every other request body.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from ledger.api.schemas import Reason, Request
from ledger.states import convert
from ledger.values import INT64_MAX, MAX_TOKENS_MAX, TEMPERATURE_MAX
from steering.stats import SchedulerStats

PROFILE_REF_MAX = 256  # a name (at most 100 characters, trimmed) or an id in any of its spellings


class TextPart(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text"]
    text: str


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    role: Literal["system", "developer", "user", "assistant"]
    """``developer`` is OpenAI's newer name for ``system``, and is run (and recorded) as one."""
    content: str | Annotated[list[TextPart], Meta(min_length=1)] | None
    """Text, or OpenAI's content parts (at least one; text parts only: they are joined by newlines); null: none (an
    assistant's message only)."""
    name: str | None = None
    """The participant's name, as OpenAI takes it (not shown to the model)."""

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "\n".join(part.text for part in self.content)


class ResponseFormat(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["text"]
    """Text is what this server answers (no JSON mode)."""


Unsupported = Annotated[float, Meta(ge=0, le=0, description="Not supported here: 0 or null only.")]
NoLogitBias = Annotated[dict[str, float], Meta(max_length=0, description="Not supported here: {} or null only.")]


MaxTokens = Annotated[int, Meta(ge=1, le=MAX_TOKENS_MAX)]
StopString = Annotated[str, Meta(min_length=1)]


class StreamOptions(msgspec.Struct, forbid_unknown_fields=True):
    include_usage: bool | None = None
    """A last chunk with the token counts (and no choices)."""


class ChatCompletionRequest(Request, kw_only=True):
    model: str | None = None
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_tokens: MaxTokens | None = None
    """Default (or null): 128, fewer where the model's context ends first."""
    max_completion_tokens: MaxTokens | None = None
    """OpenAI's newer name for ``max_tokens`` (both given: they must be equal)."""
    temperature: Annotated[float, Meta(ge=0, le=TEMPERATURE_MAX)] | None = None
    """Default (or null): 1."""
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    """Default (or null): 1."""
    seed: Annotated[int, Meta(ge=0, le=INT64_MAX)] | None = None
    stop: StopString | Annotated[list[StopString], Meta(max_length=4)] | None = None
    """Up to 4 strings; the completion ends before the first of them it would produce."""
    stream: bool | None = None
    n: Literal[1] | None = None
    """One choice per request (only 1)."""
    # OpenAI parameters accepted for compatibility, at their defaults only (a value that would change the answer is
    # refused rather than ignored):
    presence_penalty: Unsupported | None = None
    frequency_penalty: Unsupported | None = None
    logprobs: Literal[False] | None = None
    top_logprobs: Literal[0] | None = None
    logit_bias: NoLogitBias | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    """Whom the request is for, in the client's words: taken, and kept nowhere (the log is for good)."""
    stream_options: StreamOptions | None = None
    # This server's extensions:
    profile: Annotated[str, Meta(max_length=PROFILE_REF_MAX)] | None = None
    """A profile id or name; omitted → the active profile, if any."""
    profile_version: Annotated[int, Meta(ge=1, le=INT64_MAX)] | None = None
    steering_method: Literal["add", "add_normalized"] = "add"
    compare: bool = False
    """Also return the unsteered completion for the same seed."""
    min_position: Annotated[int, Meta(ge=0, le=INT64_MAX)] | None = None
    """Generate only once the steering hook has applied this log position (e.g. an activation's)."""


class ChatChoiceMessage(msgspec.Struct):
    role: str
    content: str


class ChatChoice(msgspec.Struct):
    index: int
    message: ChatChoiceMessage
    finish_reason: str


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class LedgerRun(msgspec.Struct):
    """Where this completion landed in the ledger, and what is needed to replay it."""

    execution_id: UUID
    position: int
    profile_id: UUID | None
    profile_version: int | None
    seed: int
    output_sha256: str
    warnings: list[str]


class ChatCompletion(msgspec.Struct):
    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str
    ledger: LedgerRun
    unsteered: ChatChoice | None = None


class ChunkDelta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: ChunkDelta
    finish_reason: str | None


class ChatCompletionChunk(msgspec.Struct, omit_defaults=True):
    """One event of a streamed completion (``stream: true``; each sent as ``data: <chunk>``, the last as
    ``data: [DONE]``). The last chunk with a choice carries ``ledger`` and ``system_fingerprint``; with
    ``stream_options.include_usage``, one more chunk carries ``usage`` and no choices. An error after the answer
    began comes as an event in OpenAI's error shape (``{"error": {...}}``), then ``[DONE]``."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None | msgspec.UnsetType = msgspec.UNSET  # null in every chunk but the last with include_usage
    system_fingerprint: str | None = None
    ledger: LedgerRun | None = None


class ModelCard(msgspec.Struct):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(msgspec.Struct):
    object: str
    data: list[ModelCard]


class ReplayExecution(Request):
    """A replay re-runs the record as it was: the body, if any, gives only the reason it is recorded with."""

    reason: Reason | None = None


class ReplayRead(msgspec.Struct):
    reproduced: bool
    original_execution_id: UUID
    original_status: Annotated[str, Meta(description=(
        "The original's status: `partial` when it was cut short (its client left, or the server stopped); the "
        "replay then ran as many tokens as it had, and a warning says so"))]
    original_sha256: str
    replay_sha256: str
    replay_execution_id: UUID
    position: int
    output: str
    warnings: list[str]

    @classmethod
    def of(cls, outcome: Any) -> ReplayRead:
        """What a replay (``steering.runs.ReplayOutcome``) answers: the API's body, and ``ledger replay --json``."""
        replay = outcome.replay
        return convert(outcome, cls, replay_sha256=replay.result.output_sha256, replay_execution_id=replay.execution_id,
                       position=replay.position, output=replay.result.text)


class SteeringStatusRead(msgspec.Struct):
    """The steering hook of this server's model: the profile version it applies, and the log position it reached.
    A server without a model (``model_loaded`` false) has no hook: its other fields are empty, whatever profile is
    active (``/api/profiles/active`` says which)."""

    model_loaded: bool
    model_id: str | None
    sae_id: str | None
    sae_layer: int | None
    device: str | None
    dtype: str | None
    active_profile_id: UUID | None
    version: int | None
    pinned: bool
    position: int
    applied_at: datetime | None
    feature_count: int
    error: str | None
    scheduler: SchedulerStats | None = None
