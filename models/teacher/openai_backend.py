"""Any OpenAI-compatible endpoint (`vllm serve`, a hosted model) as the teacher, through the `openai` client.

Requests run concurrently under a semaphore; the client retries timeouts, dropped connections, 408, 409, 429 and
5xx itself (`max_retries`, exponential backoff from 0.5 s to 8 s, or the server's Retry-After). vLLM's own request
fields (`structured_outputs`, `ignore_eos`, `min_tokens`) travel in `extra_body`. The API key is read from the
environment variable the config names and is never logged or stored.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
from openai import AsyncOpenAI

from fsa_distill.core.redact import REDACTED, redact_text, redact_url
from fsa_distill.models.teacher.base import GenerationRequest, TeacherAnswer, TeacherBackend, TeacherError

FATAL_STATUS = {401, 403, 404}  # the endpoint refuses every request: stop the run
_NO_KEY = "no-api-key"


class OpenAIBackend(TeacherBackend):
    supports_structured_outputs = True  # as vLLM's server reads it; other servers may refuse the field

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        weights_digest: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 16,
        request_timeout_s: float = 120.0,
        max_retries: int = 5,
        max_model_len: int = 2048,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.shown_url = redact_url(self.base_url)  # in messages and logs: no userinfo or secret query values
        self.model_id = model
        self.weights_digest = weights_digest or f"served:{model}"
        self.max_model_len = max_model_len
        self.max_concurrency = max_concurrency
        self.request_timeout_s = request_timeout_s
        self.max_retries = max_retries
        self._api_key_env = api_key_env
        self.retries = 0  # retries the client made, for reporting

    def _client(self) -> AsyncOpenAI:
        """A client for one `generate` call (its connections belong to that call's event loop)."""
        key = os.environ.get(self._api_key_env)  # the one allowed env read: secrets never enter the config
        # The client insists on a key (else it reads OPENAI_API_KEY): a keyless endpoint, such as a local
        # `vllm serve`, gets a placeholder that `_create` keeps off the wire.
        return AsyncOpenAI(base_url=self.base_url, api_key=key or _NO_KEY, max_retries=self.max_retries,
                           timeout=self.request_timeout_s)

    def _payload(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        """The endpoint and the arguments of its `create` call; vLLM's own fields go in `extra_body`."""
        arguments: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        extra: dict[str, Any] = {}
        if request.ignore_eos:  # only sent by benchmarks
            extra.update(ignore_eos=True, min_tokens=request.max_tokens)
        if request.regex:  # the vLLM server's structured outputs
            extra["structured_outputs"] = {"regex": request.regex}
        if extra:
            arguments["extra_body"] = extra
        if request.messages is not None:
            return "/chat/completions", {**arguments, "messages": list(request.messages)}
        return "/completions", {**arguments, "prompt": request.prompt}

    async def _create(self, client: AsyncOpenAI, path: str, arguments: dict[str, Any]) -> Any:
        """One request, retried by the client; the parsed completion, or None for a request the server refused
        (e.g. 400 prompt too long: this request's problem, not the run's)."""
        endpoint = client.chat.completions if path == "/chat/completions" else client.completions
        try:
            raw = await endpoint.with_raw_response.create(  # raw: how many retries it took
                **arguments, extra_headers={"Authorization": openai.omit} if client.api_key == _NO_KEY else None)
        except openai.APIStatusError as error:
            if error.status_code in FATAL_STATUS:
                body = redact_text(error.response.text[:200]).replace(client.api_key, REDACTED)  # an echoed key too
                raise TeacherError(f"HTTP {error.status_code} from {self.shown_url}{path}: {body}") from None
            if not self._transient(error.status_code):
                return None
            self.retries += self.max_retries
            raise self._gave_up(f"HTTP {error.status_code} from {self.shown_url}{path}") from None
        except openai.APIConnectionError as error:  # refused, unreachable, timed out: after every retry
            self.retries += self.max_retries
            cause = f" ({type(error.__cause__).__name__}: {error.__cause__})" if error.__cause__ else ""
            raise self._gave_up(f"{type(error).__name__}: {error}{cause}") from None
        self.retries += raw.retries_taken
        return raw.parse()

    @staticmethod
    def _transient(status: int) -> bool:
        """The statuses the client retries (openai's `_should_retry`): still failing after them, the endpoint is
        down, not this request wrong."""
        return status in (408, 409, 429) or status >= 500

    def _gave_up(self, problem: str) -> TeacherError:
        return TeacherError(f"teacher at {self.shown_url} failed after {self.max_retries} retries: "
                            f"{redact_text(problem)}")

    async def _one(self, client: AsyncOpenAI, semaphore: asyncio.Semaphore, request: GenerationRequest
                   ) -> TeacherAnswer:
        path, arguments = self._payload(request)
        # A semaphore, not the client's connection limit: a request queued for a pooled connection would spend
        # its timeout waiting.
        async with semaphore:
            completion = await self._create(client, path, arguments)
        if completion is None:
            return TeacherAnswer("", 0, "error")
        choice = completion.choices[0]
        text = choice.message.content if path == "/chat/completions" else choice.text
        usage = completion.usage
        finish = "length" if choice.finish_reason == "length" else "stop"
        return TeacherAnswer(text or "", int(usage.completion_tokens or 0) if usage else 0, finish,
                             int(usage.prompt_tokens or 0) if usage else 0)

    async def agenerate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        semaphore = asyncio.Semaphore(self.max_concurrency)
        async with self._client() as client:
            return list(await asyncio.gather(*(self._one(client, semaphore, r) for r in requests)))

    def generate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no event loop in this thread
            return asyncio.run(self.agenerate(requests))
        # called from async code (e.g. an async flow): run our own loop in a helper thread
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.agenerate(requests)).result()
