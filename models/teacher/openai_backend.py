"""Any OpenAI-compatible endpoint (`vllm serve`, a hosted model) as the teacher.

Requests run concurrently under a semaphore; timeouts, 429 and 5xx are retried with exponential backoff.
The API key is read from the environment variable the config names and is never logged or stored.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from fsa_distill.core.redact import redact_text, redact_url
from fsa_distill.models.teacher.base import GenerationRequest, TeacherAnswer, TeacherBackend, TeacherError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUS = {401, 403, 404}


class RetryableError(Exception):
    """A transient failure worth another try (timeout, connection reset, 429, 5xx)."""


def _is_retryable(error: BaseException) -> bool:
    return isinstance(error, (RetryableError, httpx.TimeoutException, httpx.TransportError))


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
        backoff_s: float = 0.5,
        max_model_len: int = 2048,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.shown_url = redact_url(self.base_url)  # in messages and logs: no userinfo or secret query values
        self.model_id = model
        self.weights_digest = weights_digest or f"served:{model}"
        self.max_model_len = max_model_len
        self.max_concurrency = max_concurrency
        self.timeout = httpx.Timeout(request_timeout_s)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._api_key_env = api_key_env
        self.retries = 0  # transient failures seen, for reporting

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self._api_key_env)  # the one allowed env read: secrets never enter the config
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _payload(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        if request.ignore_eos:  # vLLM extensions; only sent by benchmarks
            body.update(ignore_eos=True, min_tokens=request.max_tokens)
        if request.regex:  # vLLM server's structured outputs (the OpenAI client's `extra_body`)
            body["structured_outputs"] = {"regex": request.regex}
        if request.messages is not None:
            return "/chat/completions", {**body, "messages": list(request.messages)}
        return "/completions", {**body, "prompt": request.prompt}

    async def _post(self, client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
        response = await client.post(path, json=body)
        if response.status_code in RETRY_STATUS:
            self.retries += 1
            raise RetryableError(f"HTTP {response.status_code} from {self.shown_url}{path}")
        if response.status_code in FATAL_STATUS:
            raise TeacherError(f"HTTP {response.status_code} from {self.shown_url}{path}: "
                               f"{redact_text(response.text[:200])}")
        return response

    async def _one(
        self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, request: GenerationRequest
    ) -> TeacherAnswer:
        path, body = self._payload(request)
        async with semaphore:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(_is_retryable),
                    stop=stop_after_attempt(self.max_retries + 1),
                    wait=wait_exponential(multiplier=self.backoff_s, max=30),
                    reraise=True,
                ):
                    with attempt:
                        response = await self._post(client, path, body)
            except (RetryableError, httpx.HTTPError) as error:
                raise TeacherError(f"teacher at {self.shown_url} failed after {self.max_retries} retries: "
                                   f"{type(error).__name__}: {redact_text(str(error))}") from None
        if response.status_code >= 400:  # e.g. 400 prompt too long: this request's problem, not the run's
            return TeacherAnswer("", 0, "error")
        choice = response.json()["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        usage = response.json().get("usage") or {}
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return TeacherAnswer(text or "", int(usage.get("completion_tokens", 0)), finish,
                                int(usage.get("prompt_tokens", 0)))

    async def agenerate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        semaphore = asyncio.Semaphore(self.max_concurrency)
        limits = httpx.Limits(max_connections=self.max_concurrency)
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers(), timeout=self.timeout, limits=limits
        ) as client:
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
