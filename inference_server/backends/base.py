"""The contract every text-generation engine honours.

The API layer turns an OpenAI request into a :class:`GenerationRequest` (prompt already rendered
through the model's chat template, grammar already compiled) and consumes the events an engine
yields. Keeping this contract free of HTTP and of llama.cpp types is what lets the router later put
a remote (cloud) engine behind the same interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


class BackendError(Exception):
    """Base class: an engine could not serve a request. Never a client mistake."""


class ModelNotFoundError(BackendError):
    """The requested model id is not known to this node (HTTP 404)."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model}' does not exist on this node")
        self.model = model


class ModelLoadError(BackendError):
    """A known model failed to load (bad file, out of memory). HTTP 503."""


class QueueFullError(BackendError):
    """Every slot is busy and the wait queue is full (HTTP 429 with Retry-After)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("All generation slots are busy and the wait queue is full")
        self.retry_after = retry_after


class PromptTooLongError(BackendError):
    """The prompt plus the requested completion does not fit the context (HTTP 413)."""

    def __init__(self, prompt_tokens: int, context_size: int) -> None:
        super().__init__(
            f"The prompt has {prompt_tokens} tokens; this model's context per slot holds "
            f"{context_size}"
        )
        self.prompt_tokens = prompt_tokens
        self.context_size = context_size


class GenerationTimeoutError(BackendError):
    """The per-request timeout elapsed (queue wait + generation). HTTP 504."""


class InvalidGrammarError(BackendError):
    """A GBNF grammar (from json_schema or tools) failed to compile. HTTP 400."""


@dataclass(frozen=True, kw_only=True, slots=True)
class SamplingParams:
    """Sampling settings for one request; ``None`` means "the engine's default"."""

    max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None
    grammar: str | None = None
    """GBNF grammar text (root rule ``root``) that constrains the output."""


@dataclass(frozen=True, kw_only=True, slots=True)
class GenerationRequest:
    """One text generation: the prompt is final text (chat template already applied)."""

    model: str
    prompt: str
    params: SamplingParams = field(default_factory=SamplingParams)
    timeout: float | None = None
    """Seconds for queue wait plus generation; ``None`` takes the engine's configured default."""
    add_bos: bool = True
    """Prepend BOS when the model wants it; templates that write ``<bos>`` themselves set False."""


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenEvent:
    """Text produced since the previous event (may hold several tokens' worth of bytes)."""

    text: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, kw_only=True, slots=True)
class FinishEvent:
    """Always the last event of a generation that was not cancelled."""

    finish_reason: FinishReason
    usage: Usage
    queue_seconds: float
    prompt_seconds: float
    generation_seconds: float


GenerationEvent = TokenEvent | FinishEvent


@dataclass(frozen=True, kw_only=True, slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True, kw_only=True, slots=True)
class SlotStatus:
    """What one slot is doing, for /api/v1/status (llama-server's /slots idea)."""

    id: int
    busy: bool
    model: str | None = None
    prompt_tokens: int = 0
    generated_tokens: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelInfo:
    """A model this node can serve, loaded or not."""

    id: str
    path: str
    loaded: bool
    size_bytes: int
    context_size: int | None = None
    chat_template: str | None = None
    """The GGUF's own Jinja chat template, when it ships one (only known once loaded)."""
    architecture: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenizerInfo:
    """What the chat layer needs to render a prompt for one model's vocabulary.

    A template that writes ``<bos>`` itself must send ``add_bos=False``, or the model sees two.
    """

    add_bos: bool
    """The model wants a BOS token in front of every prompt."""
    bos_token: str | None
    eos_token: str | None
    eot_token: str | None
    """End-of-turn token text (``<end_of_turn>`` for Gemma), when the vocabulary has one."""
    chat_template: str | None
    """The GGUF's own Jinja chat template (``tokenizer.chat_template``), if it ships one."""


@runtime_checkable
class TextBackend(Protocol):
    """A node-local or remote engine that serves text generation and embeddings."""

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Yield token events then exactly one FinishEvent.

        Closing the iterator early (client disconnected) must stop the generation at once and
        free its slot. Raises the BackendError subclasses above before the first event.
        """
        ...

    async def embed(self, model: str, inputs: Sequence[str]) -> EmbeddingResult: ...

    async def count_tokens(self, model: str, text: str) -> int: ...

    async def models(self) -> list[ModelInfo]: ...

    def slots(self) -> list[SlotStatus]: ...

    def queue_depth(self) -> int: ...
