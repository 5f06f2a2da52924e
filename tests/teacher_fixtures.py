"""Fixtures and fakes for the teacher tests: a tiny random Llama (SmolLM2's tokenizer, 2 layers, hidden 64),
the converted SmolLM2 teacher, a scriptable fake backend, and an HTTP server that fails on purpose."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest

from fsa_distill.models.teacher.base import GenerationRequest, TeacherAnswer, TeacherBackend

# re-exported for the tests that start servers: the benchmark's own start and stop helpers
from fsa_distill.perf.bench_serve_http import stop_group, wait_until_healthy  # noqa: F401


def answers_cached_so_far(cache_path: Path) -> int:
    """Rows in a cache another process is writing; 0 until it exists with its tables (polled by kill tests)."""
    if not cache_path.exists():
        return 0
    try:
        with sqlite3.connect(cache_path) as connection:
            return connection.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # file created, schema not yet: the writer is still setting up
        return 0


def kill_once_cached(process: subprocess.Popen, cache_path: Path, at_least: int, timeout_s: float) -> None:
    """SIGKILL a generating process as soon as `at_least` answers are in its cache (or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and answers_cached_so_far(cache_path) < at_least:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


GOOD_REWRITE = "I loved the {word}, and I am happy to say so plainly."


class FakeTeacher(TeacherBackend):
    """A deterministic teacher: analysis answers quote the review's first word, rewrites paraphrase it.

    `answer` overrides the text per request; `fail_after_calls` raises on that call (a crash mid-run);
    `delay_s` slows each call (for the kill-mid-run test)."""

    def __init__(
        self,
        answer: Callable[[GenerationRequest], str | None] | None = None,
        fail_after_calls: int | None = None,
        delay_s: float = 0.0,
        model_id: str = "fake-teacher",
    ) -> None:
        self.model_id = model_id
        self.weights_digest = "fake-digest"
        self.max_model_len = 2048
        self.answer = answer
        self.fail_after_calls = fail_after_calls
        self.delay_s = delay_s
        self.calls: list[list[GenerationRequest]] = []

    @property
    def n_requests(self) -> int:
        return sum(len(call) for call in self.calls)

    def _text(self, request: GenerationRequest) -> str:
        if self.answer is not None:
            custom = self.answer(request)
            if custom is not None:
                return custom
        content = request.messages[0]["content"] if request.messages else request.prompt or ""
        review = content.rsplit("Review: ", 1)[-1]
        word = review.split()[0].strip(".,!?")
        if content.startswith("Analyze"):
            return (f'Opinion Target 1: "{word}"\nAspect: "quality"\nSentiment: Positive\n'
                    f"Reasoning: The review praises the {word}.")
        return GOOD_REWRITE.format(word=word)

    def generate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        if self.fail_after_calls is not None and len(self.calls) >= self.fail_after_calls:
            raise RuntimeError("teacher crashed on purpose")
        self.calls.append(list(requests))
        time.sleep(self.delay_s)
        return [TeacherAnswer(self._text(r), len(self._text(r).split()), "stop") for r in requests]


def make_reviews(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"id": f"r{i}", "text": f"Pasta{i} was wonderful and the staff were friendly to us."}
            for i in range(start, start + n)]


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2's tokenizer (with its chat template), extracted from the GGUF: no hub access needed."""
    from transformers import AutoTokenizer

    from fsa_distill.models.teacher.smollm2 import gguf_path

    gguf = gguf_path()
    out = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer: loads in a second everywhere."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,  # head_dim 64: a size vLLM's CPU attention kernels support
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The real offline teacher, converted once per test session."""
    from fsa_distill.models.teacher.smollm2 import ensure_smollm2

    return ensure_smollm2(tmp_path_factory.mktemp("work") / "models")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]




class FlakyServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 that answers the first requests with the given error
    statuses, then either proxies to `upstream` (a real server) or answers itself."""

    def __init__(self, fail_with: list[int], upstream: str | None = None) -> None:
        self.fail_with = list(fail_with)
        self.upstream = upstream
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    # The headers as received, looked up in any letter case (HTTP's rule; clients differ in it).
                    outer.requests.append({"path": self.path, "headers": self.headers, "body": json.loads(body)})
                    status = outer.fail_with.pop(0) if outer.fail_with else None
                if status is not None:
                    self._send(status, {"error": {"message": "failing on purpose"}})
                elif outer.upstream:
                    import httpx

                    upstream = httpx.post(outer.upstream + self.path.removeprefix("/v1"), content=body,
                                          headers={"Content-Type": "application/json"}, timeout=120)
                    self._send(upstream.status_code, upstream.json())
                else:
                    prompt = json.loads(body)["messages"][-1]["content"]
                    self._send(200, {
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": f"echo: {prompt[-20:]}"}}],
                        "usage": {"completion_tokens": 5, "prompt_tokens": len(prompt.split())},
                    })

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_server() -> Iterator[Callable[..., FlakyServer]]:
    servers: list[FlakyServer] = []

    def start(fail_with: list[int], upstream: str | None = None) -> FlakyServer:
        server = FlakyServer(fail_with, upstream).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()
