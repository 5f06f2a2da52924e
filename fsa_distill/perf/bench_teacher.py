"""Teacher throughput: vLLM vs HF `generate` on the same model, dtype, prompts and token budget, the pipeline's
own path (cache, validation, dataset writing) vs calling vLLM directly, and where the pipeline overrides an
engine default, that default too: on CPUs without native bf16 the dtype (float32 vs vLLM's bfloat16), on
2-core machines the core reservation (both cores for the worker vs one kept for vLLM's scheduler).

Every answer is forced to exactly `max_tokens` tokens (ignore_eos / min_tokens) so all three paths produce
the same number of tokens. The prefix cache is reset before each timed vLLM run, so no run profits from an
earlier one. Direct and pipeline runs alternate `repeats` times and their medians are compared: one pair of
runs varied by ±10% here (2-core machine), while the pipeline's own work (cache, validation, writing) is
~0.1 s of a 45 s run. Writes docs/results/teacher.json.

    python -m fsa_distill.perf.bench_teacher --n-prompts 128 --max-tokens 200
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

from fsa_distill.core.files import write_json_atomically
from fsa_distill.perf import RESULTS_DIR

RESULTS_PATH = RESULTS_DIR / "teacher.json"


def benchmark_reviews(n_reviews: int, data_dir: Path | None = None) -> list[dict[str, str]]:
    """Distinct restaurant-review sentences from the benchmark's train split."""
    from fsa_distill.benchmark.data import load_sentences

    texts = list(dict.fromkeys(s["sentence"].strip() for s in load_sentences("atsa", "rest14", "train", data_dir)))
    return [{"id": str(i), "text": text} for i, text in enumerate(texts[:n_reviews])]


def _vllm_direct(backend: Any, requests: list[Any]) -> tuple[int, float]:
    """The baseline the pipeline is compared with: chat-render, then one `LLM.generate` call."""
    from vllm import SamplingParams

    prompts = [backend.render_prompt(r) for r in requests]
    params = SamplingParams(max_tokens=requests[0].max_tokens, min_tokens=requests[0].max_tokens,
                            ignore_eos=True, temperature=0.0)
    backend.llm.reset_prefix_cache()
    started = time.perf_counter()
    outputs = backend.llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return sum(len(o.outputs[0].token_ids) for o in outputs), seconds


def _pipeline(backend: Any, reviews: list[dict[str, str]], config: Any) -> tuple[int, float, dict[str, Any]]:
    """The same prompts through `generate_responses`: cache, validation and dataset writing included."""
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

    with tempfile.TemporaryDirectory(prefix="bench-teacher-") as temp:
        backend.llm.reset_prefix_cache()
        started = time.perf_counter()
        stats = generate_responses(reviews, GenerateSettings.of(config), Path(temp) / "out", teacher=backend,
                                   cache_path=Path(temp) / "cache.sqlite", progress=False, ignore_eos=True, work_dir=config.work_dir)
        return stats["tokens"], time.perf_counter() - started, stats


def _vllm_engine_defaults(model_dir: Path, digest: str, requests: list[Any], enforce_eager: bool,
                          kv_cache_memory_gib: float, dtype: str, reserve_one_core: bool) -> tuple[int, float]:
    """The same direct run with one of the pipeline's engine choices undone: `dtype="auto"` handed to vLLM
    unchanged (bfloat16 on CPUs), or `reserve_one_core` as vLLM does for its scheduler by default."""
    from fsa_distill.models.teacher.vllm_backend import (
        RESERVED_CPU_ENV,
        VLLM_DEFAULT_RESERVED_CPUS,
        VLLMBackend,
    )

    # exported, vLLM's own reservation turns the backend's override off
    reservation = {RESERVED_CPU_ENV: VLLM_DEFAULT_RESERVED_CPUS} if reserve_one_core else {}
    with patch.dict(os.environ, reservation):
        backend = VLLMBackend(str(model_dir), model_id="bench", weights_digest=digest, dtype=dtype,
                              kv_cache_memory_gib=kv_cache_memory_gib, enforce_eager=enforce_eager)
    try:
        backend.generate(requests[:4])  # warm-up, as for the main run
        return _vllm_direct(backend, requests)
    finally:
        backend.close()


def _per_s(run: tuple[int, float] | None) -> float | None:
    return round(run[0] / run[1], 1) if run else None


def engine_dtype(backend: Any) -> str:
    """The dtype vLLM really runs in (`auto` resolved), e.g. "bfloat16"."""
    return str(backend.llm.llm_engine.model_config.dtype).removeprefix("torch.")


def _hf(model_dir: Path, requests: list[Any], batch_size: int, dtype: str) -> tuple[int, float]:
    from fsa_distill.models.teacher.hf_backend import HFBackend

    backend = HFBackend(str(model_dir), model_id="bench", weights_digest="bench", dtype=dtype)
    try:
        backend.generate(requests[:2])  # warm-up
        started = time.perf_counter()
        tokens = 0
        for start in range(0, len(requests), batch_size):
            tokens += sum(r.n_tokens for r in backend.generate(requests[start : start + batch_size]))
        return tokens, time.perf_counter() - started
    finally:
        backend.close()


def run_teacher_bench(
    n_prompts: int = 128,
    max_tokens: int = 200,
    work_dir: Path = Path("work"),
    enforce_eager: bool = True,
    kv_cache_memory_gib: float = 2.0,
    hf_batch_size: int = 32,
    repeats: int = 3,
    results_path: Path | None = RESULTS_PATH,
    data_dir: Path | None = None,
) -> dict[str, Any]:
    from fsa_distill.core.config import DistillConfig
    from fsa_distill.models.teacher.factory import compute_dtype
    from fsa_distill.models.teacher.prompts import load_prompt
    from fsa_distill.models.teacher.smollm2 import NAME, ensure_smollm2
    from fsa_distill.models.teacher.vllm_backend import RESERVED_CPU_ENV, VLLMBackend, reserved_cpu_override
    from fsa_distill.tasks.stages.generate import GenerateSettings, build_jobs, input_budget

    model_dir, digest = ensure_smollm2(Path(work_dir) / "models")
    config = DistillConfig(work_dir=work_dir)
    config.teacher.kv_cache_memory_gib = kv_cache_memory_gib
    config.generation.max_new_tokens = max_tokens
    config.generation.reask_rejected = False  # same work as the direct call: one answer per prompt
    config.generation.batch_size = n_prompts
    reviews = benchmark_reviews((n_prompts + 1) // 2, data_dir)
    prompts = [load_prompt(name) for name in config.generation.prompts]

    dtype = compute_dtype(config.teacher.dtype)
    backend = VLLMBackend(
        str(model_dir), model_id=NAME, weights_digest=digest, dtype=dtype,
        max_model_len=config.teacher.max_model_len, kv_cache_memory_gib=kv_cache_memory_gib,
        enforce_eager=enforce_eager, enable_prefix_caching=config.teacher.enable_prefix_caching,
    )
    vllm_dtype = engine_dtype(backend)
    try:
        budget = input_budget(GenerateSettings.of(config), backend, prompts)
        reviews = [{"id": r["id"], "text": backend.truncate(r["text"], budget)} for r in reviews]
        jobs = build_jobs([(r["id"], r["text"]) for r in reviews], prompts, GenerateSettings.of(config),
                          backend, ignore_eos=True)
        requests = [job.request for job in jobs][:n_prompts]
        backend.generate(requests[:4])  # warm-up (first-step allocations), not timed
        direct_runs, pipeline_runs = [], []
        for _ in range(repeats):  # interleaved, so load changes on the machine hit both paths alike
            direct_runs.append(_vllm_direct(backend, requests))
            pipeline_runs.append(_pipeline(backend, reviews, config))
    finally:
        backend.close()
    vllm_tokens, vllm_s = direct_runs[0][0], statistics.median(run[1] for run in direct_runs)
    pipeline_s = statistics.median(run[1] for run in pipeline_runs)
    stats = pipeline_runs[0][2]
    hf_tokens, hf_s = _hf(model_dir, requests, hf_batch_size, vllm_dtype)
    own_dtype = reserved_core = None
    if dtype != config.teacher.dtype:
        own_dtype = _vllm_engine_defaults(model_dir, digest, requests, enforce_eager, kv_cache_memory_gib,
                                          "auto", reserve_one_core=False)
    reservation_override = reserved_cpu_override()
    if reservation_override is not None:
        reserved_core = _vllm_engine_defaults(model_dir, digest, requests, enforce_eager, kv_cache_memory_gib,
                                              vllm_dtype, reserve_one_core=True)

    results = {
        "vllm_tokens_per_s": round(vllm_tokens / vllm_s, 1),
        "hf_tokens_per_s": round(hf_tokens / hf_s, 1),
        "ratio": round((vllm_tokens / vllm_s) / (hf_tokens / hf_s), 2),
        "pipeline_tokens_per_s": round(stats["tokens"] / pipeline_s, 1),
        "pipeline_vs_direct": round((stats["tokens"] / pipeline_s) / (vllm_tokens / vllm_s), 3),
        "n_prompts": len(requests),
        "max_tokens": max_tokens,
        "tokens": {"vllm": vllm_tokens, "pipeline": stats["tokens"], "hf": hf_tokens},
        "seconds": {"vllm": round(vllm_s, 2), "pipeline": round(pipeline_s, 2), "hf": round(hf_s, 2)},
        "repeats": {"vllm": [round(run[1], 2) for run in direct_runs],
                    "pipeline": [round(run[1], 2) for run in pipeline_runs]},
        "dtype": vllm_dtype,
        "vllm_own_dtype_tokens_per_s": _per_s(own_dtype),
        "dtype_speedup": round((vllm_tokens / vllm_s) / _per_s(own_dtype), 2) if own_dtype else None,
        "pipeline_generated": stats["generated"],
        "model": NAME,
        "enforce_eager": enforce_eager,
        "vllm_reserved_cpus": reservation_override or os.environ.get(RESERVED_CPU_ENV, "vLLM default"),
        "vllm_one_core_reserved_tokens_per_s": _per_s(reserved_core),
        "all_cores_speedup": round((vllm_tokens / vllm_s) / _per_s(reserved_core), 2) if reserved_core else None,
        "hf_batch_size": hf_batch_size,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                    "platform": platform.platform()},
    }
    if results_path is not None:
        write_json_atomically(Path(results_path), results)
    return results


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-prompts", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--work-dir", type=Path, default=Path("work"))
    parser.add_argument("--compile", action="store_true", help="let vLLM compile graphs (slower start)")
    args = parser.parse_args()
    print(json.dumps(run_teacher_bench(args.n_prompts, args.max_tokens, args.work_dir, not args.compile)))


if __name__ == "__main__":  # vLLM on CPU spawns workers: scripts need this guard
    main()


def smollm2_engine(work_dir: Path, config: Any, kv_cache_memory_gib: float) -> Any:
    """The offline SmolLM2 teacher on vLLM, as the benchmarks that compare two arms on one engine start it."""
    from fsa_distill.models.teacher.factory import compute_dtype
    from fsa_distill.models.teacher.smollm2 import NAME, ensure_smollm2
    from fsa_distill.models.teacher.vllm_backend import VLLMBackend

    model_dir, digest = ensure_smollm2(Path(work_dir) / "models")
    return VLLMBackend(str(model_dir), model_id=NAME, weights_digest=digest,
                       dtype=compute_dtype(config.teacher.dtype), max_model_len=config.teacher.max_model_len,
                       kv_cache_memory_gib=kv_cache_memory_gib, enforce_eager=True)
