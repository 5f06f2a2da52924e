"""The one interface every teacher backend implements: a batch of requests in, a batch of results out.

Backends differ in where the model runs (vLLM engine in this process, an OpenAI-compatible server, plain
HF `generate`); the generation stage, cache and validation only ever see these types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Literal, Self

Message = dict[str, str]
FinishReason = Literal["stop", "length", "error"]


class TeacherError(RuntimeError):
    """The teacher cannot answer at all (server down after retries, bad API key): stop the run; finished
    chunks are already in the cache, so a rerun resumes."""


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt plus its sampling settings. Give chat `messages` (normal case) or a raw `prompt` text."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    ignore_eos: bool = False  # benchmarks only: every answer runs to max_tokens, so backends compare fairly
    regex: str | None = None  # structured outputs: the answer must match this regex (backends that support it)

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of messages or prompt")

    def sampling_key(self) -> dict[str, Any]:
        """The sampling part of a cache key (everything that changes the answer except the prompt)."""
        fields = asdict(self)
        fields.pop("messages")
        fields.pop("prompt")
        if fields["regex"] is None:  # unconstrained answers keep the keys they had before structured outputs
            fields.pop("regex")
        return fields


@dataclass(frozen=True)
class TeacherAnswer:
    text: str
    n_tokens: int
    finish_reason: FinishReason
    n_prompt_tokens: int = 0  # the rendered prompt's tokens (cost per run); 0 where a backend cannot tell


class TeacherBackend(ABC):
    """A teacher LLM. `model_id` and `weights_digest` go into every cache key, so two models never share
    answers; `max_model_len` bounds prompt + answer tokens."""

    model_id: str
    weights_digest: str
    max_model_len: int = 2048
    supports_structured_outputs: bool = False  # honours GenerationRequest.regex
    streaming: bool = False  # has `generate_stream(queue, window)`: no chunk barrier in the generate stage
    distributed: bool = False  # replicas on a Ray cluster (engine=ray)

    @abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        """Answer every request, in order. Failed requests come back with finish_reason="error"."""

    def sampling_key(self, request: GenerationRequest) -> dict[str, Any]:
        """The sampling part of an answer's cache key (backends whose answers ignore sampling return less)."""
        return request.sampling_key()

    def count_tokens(self, text: str) -> int:
        """Token count of `text`; backends without a local tokenizer estimate ~4 characters per token."""
        return max(1, len(text) // 4)

    def truncate(self, text: str, max_tokens: int) -> str:
        """Cut `text` to at most `max_tokens` tokens (never fails, never returns more)."""
        return text[: max_tokens * 4]

    def close(self) -> None:
        """Release the engine, server connections or model memory."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class TokenizerMixin:
    """Exact token counting and truncation for the backends that hold an HF tokenizer (`self.tokenizer`)."""

    tokenizer: Any

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def truncate(self, text: str, max_tokens: int) -> str:
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(encoded["input_ids"]) <= max_tokens:
            return text
        end = encoded["offset_mapping"][max_tokens - 1][1]
        return text[:end]

    def render_prompt(self, request: GenerationRequest) -> str:
        """Chat messages through the model's own chat template; raw prompts pass unchanged."""
        if request.prompt is not None:
            return request.prompt
        return self.tokenizer.apply_chat_template(
            list(request.messages or ()), tokenize=False, add_generation_prompt=True
        )
