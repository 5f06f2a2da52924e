"""Backends without vLLM: OpenAI-compatible client against a local server that fails on purpose, HF
`generate` on a tiny Llama, the factory's model resolution, and the SmolLM2 conversion."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsa_distill.core.config import TeacherConfig
from fsa_distill.core.errors import InputError
from fsa_distill.models.teacher.base import GenerationRequest, TeacherError
from fsa_distill.models.teacher.factory import build_teacher, resolve_model
from fsa_distill.models.teacher.hf_backend import HFBackend
from fsa_distill.models.teacher.openai_backend import OpenAIBackend
from fsa_distill.models.teacher.prompts import load_prompt


def chat(text: str, **sampling: object) -> GenerationRequest:
    return GenerationRequest(messages=({"role": "user", "content": text},), **sampling)  # type: ignore[arg-type]


def client(base_url: str, **kwargs: object) -> OpenAIBackend:
    return OpenAIBackend(base_url, model="served", **kwargs)  # type: ignore[arg-type]


def test_openai_backend_retries_503_and_429_then_answers(flaky_server, monkeypatch) -> None:
    monkeypatch.setenv("FSA_TEST_KEY", "sk-secret-value")
    server = flaky_server([503, 503, 429])
    backend = client(server.base_url, api_key_env="FSA_TEST_KEY", max_retries=5, max_concurrency=2)
    results = backend.generate([chat("first review"), chat("second review")])
    assert [r.text for r in results] == ["echo: first review", "echo: second review"]
    assert all(r.finish_reason == "stop" and r.n_tokens == 5 for r in results)
    assert [r.n_prompt_tokens for r in results] == [2, 2]  # the server's usage.prompt_tokens (cost per run)
    assert backend.retries == 3 and len(server.requests) == 5
    assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-secret-value"
    assert server.requests[-1]["body"]["seed"] == 0 and server.requests[-1]["path"] == "/v1/chat/completions"


def test_openai_backend_gives_up_after_max_retries_without_leaking_the_key(flaky_server, monkeypatch) -> None:
    monkeypatch.setenv("FSA_TEST_KEY", "sk-secret-value")
    server = flaky_server([500] * 10)
    backend = client(server.base_url, api_key_env="FSA_TEST_KEY", max_retries=2)
    with pytest.raises(TeacherError) as caught:
        backend.generate([chat("a review")])
    assert len(server.requests) == 3 and "sk-secret" not in str(caught.value)


def test_openai_backend_stops_on_auth_errors_and_marks_bad_requests(flaky_server) -> None:
    with pytest.raises(TeacherError, match="401"):
        client(flaky_server([401]).base_url).generate([chat("a review")])
    result = client(flaky_server([400]).base_url).generate([chat("a review")])
    assert result[0].finish_reason == "error"


def test_openai_backend_retries_when_the_server_is_down() -> None:
    backend = client("http://127.0.0.1:9/v1", max_retries=1, request_timeout_s=2)
    with pytest.raises(TeacherError, match="failed after 1 retries"):
        backend.generate([chat("a review")])


def test_hf_backend_generates_with_the_chat_template(tiny_llama_dir: Path) -> None:
    with HFBackend(str(tiny_llama_dir), model_id="tiny", weights_digest="d") as backend:
        prompt = backend.render_prompt(load_prompt("rewrite").request("Nice place."))
        assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
        fixed = backend.generate([chat("hello", max_tokens=6, ignore_eos=True), chat("hi there", max_tokens=6,
                                                                                    ignore_eos=True)])
        assert [r.n_tokens for r in fixed] == [6, 6] and {r.finish_reason for r in fixed} == {"length"}
        assert [r.n_prompt_tokens for r in fixed] == [  # each prompt's own tokens, not the padded batch's
            backend.count_tokens(backend.render_prompt(chat(text))) for text in ("hello", "hi there")]
        assert fixed[0].n_prompt_tokens < fixed[1].n_prompt_tokens
        text = "one two three four five six seven"
        cut = backend.truncate(text, 3)
        assert text.startswith(cut) and 0 < backend.count_tokens(cut) <= 3 < backend.count_tokens(text)
        assert backend.truncate("short", 10) == "short"


def test_factory_resolves_builtin_folders_and_hub_ids(tmp_path: Path, tiny_llama_dir: Path) -> None:
    hub = resolve_model(TeacherConfig(model="mistralai/Mixtral-8x7B-Instruct-v0.1", revision="abc"), tmp_path)
    assert hub.path == hub.model_id == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert hub.weights_digest == "hub:mistralai/Mixtral-8x7B-Instruct-v0.1@abc"
    folder = resolve_model(TeacherConfig(model=str(tiny_llama_dir)), tmp_path)
    assert folder.weights_digest.startswith("sha256:") and folder.path == str(tiny_llama_dir.resolve())
    with pytest.raises(InputError):
        resolve_model(TeacherConfig(model="./no/such/folder"), tmp_path)
    with pytest.raises(InputError, match="base_url"):
        build_teacher(TeacherConfig(backend="openai"), tmp_path)
    served = build_teacher(TeacherConfig(backend="openai", base_url="http://x/v1", model="m"), tmp_path)
    assert isinstance(served, OpenAIBackend) and served.model_id == "m"


def test_auto_dtype_is_float32_on_cpus_without_native_bf16(tmp_path: Path, tiny_llama_dir: Path,
                                                           monkeypatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fsa_distill.models.teacher import factory

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(factory, "native_bf16_on_cpu", lambda: False)
    assert factory.compute_dtype("auto") == "float32" and factory.compute_dtype("bfloat16") == "bfloat16"
    # A bf16 checkpoint under `auto` runs in float32 here instead of emulated bf16.
    AutoModelForCausalLM.from_pretrained(tiny_llama_dir).to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(tmp_path / "bf16")
    with build_teacher(TeacherConfig(model=str(tmp_path / "bf16"), backend="hf"), tmp_path) as backend:
        assert backend.model.dtype == torch.float32

    monkeypatch.setattr(factory, "native_bf16_on_cpu", lambda: True)
    assert factory.compute_dtype("auto") == "auto"  # AVX512-BF16 / AMX: the engine's own choice
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(factory, "native_bf16_on_cpu", lambda: False)
    assert factory.compute_dtype("auto") == "auto"  # GPUs: the engine's own choice


def test_smollm2_is_converted_once_into_a_digest_keyed_folder(smollm2_dir: tuple[Path, str]) -> None:
    from fsa_distill.models.teacher.smollm2 import ensure_smollm2

    folder, digest = smollm2_dir
    assert folder.name == f"smollm2-135m-instruct-{digest[:12]}"
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert "quantization_config" not in (folder / "config.json").read_text()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_smollm2(folder.parent) == (folder, digest)  # cached: not converted again
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".smollm2") and p.is_dir()]


def test_converted_smollm2_answers_sensibly(smollm2_dir: tuple[Path, str]) -> None:
    folder, digest = smollm2_dir
    with HFBackend(str(folder), model_id="smollm2", weights_digest=digest) as backend:
        [answer] = backend.generate([chat("What is the capital of France? Answer in one word.", max_tokens=8)])
    assert "paris" in answer.text.lower()


def test_openai_backend_works_from_inside_an_event_loop(flaky_server) -> None:
    import asyncio

    backend = client(flaky_server([]).base_url)

    async def from_async_code() -> str:
        return backend.generate([chat("inside a loop")])[0].text

    assert asyncio.run(from_async_code()) == "echo: inside a loop"


def test_lazy_teacher_starts_the_engine_only_when_something_is_missing(tmp_path: Path,
                                                                      tiny_llama_dir: Path) -> None:
    from fsa_distill.core.config import DistillConfig
    from fsa_distill.models.teacher.factory import LazyTeacher
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses
    from tests.teacher_fixtures import make_reviews

    config = DistillConfig(work_dir=tmp_path / "work")
    config.teacher = TeacherConfig(model=str(tiny_llama_dir), backend="hf", max_model_len=512)
    config.generation.max_new_tokens = 4
    reviews = make_reviews(2)
    first = LazyTeacher(config.teacher, config.work_dir)
    generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out", teacher=first, progress=False,
                       work_dir=config.work_dir)
    assert first.started and first.model_id == tiny_llama_dir.name
    first.close()
    rerun = LazyTeacher(config.teacher, config.work_dir)
    stats = generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out", teacher=rerun,
                               progress=False, work_dir=config.work_dir)
    assert stats["cached"] == 4 and not rerun.started
    assert generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out", progress=False,
                              work_dir=config.work_dir)["cached"] == 4  # default path


def test_vllm_worker_gets_every_core_only_on_small_cpu_machines(monkeypatch) -> None:
    import os

    import torch

    from fsa_distill.models.teacher import vllm_backend

    monkeypatch.delenv(vllm_backend.RESERVED_CPU_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(vllm_backend, "usable_cores", lambda: 2)
    with vllm_backend.all_cores_for_cpu_worker():  # what the engine's spawned processes inherit
        assert os.environ[vllm_backend.RESERVED_CPU_ENV] == "0"
    assert vllm_backend.RESERVED_CPU_ENV not in os.environ  # only while the engine starts

    monkeypatch.setattr(vllm_backend, "usable_cores", lambda: 8)
    assert vllm_backend.reserved_cpu_override() is None  # larger machines keep vLLM's reservation
    monkeypatch.setattr(vllm_backend, "usable_cores", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert vllm_backend.reserved_cpu_override() is None  # GPUs: nothing to reserve on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(vllm_backend.RESERVED_CPU_ENV, "1")
    with vllm_backend.all_cores_for_cpu_worker():  # the user's own value wins
        assert os.environ[vllm_backend.RESERVED_CPU_ENV] == "1"
    assert os.environ[vllm_backend.RESERVED_CPU_ENV] == "1"
