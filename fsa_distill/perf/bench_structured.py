"""Structured outputs on the analysis prompt: the share of answers that validation accepts, and tokens/s, with
and without the format regex, on the same rest14 sentences, one vLLM engine, one run (so load hits both alike).

Greedy decoding, no re-asks (a re-ask would hide first-answer failures), the pipeline's own path
(`generate_responses`: cache, validation, dataset writing), a fresh answer store per arm. Writes
docs/results/structured_outputs.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fsa_distill.core.files import write_json_atomically
from fsa_distill.perf import RESULTS_DIR, machine

RESULTS_PATH = RESULTS_DIR / "structured_outputs.json"


def _arm(backend: Any, reviews: list[dict[str, str]], config: Any, structured: bool) -> dict[str, Any]:
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

    arm = config.model_copy(deep=True)
    arm.generation.structured_outputs = structured
    with tempfile.TemporaryDirectory(prefix="bench-structured-") as temp:
        backend.llm.reset_prefix_cache()
        stats = generate_responses(reviews, GenerateSettings.of(arm), Path(temp) / "out", teacher=backend,
                                   cache_path=Path(temp) / "cache.sqlite", progress=False, work_dir=arm.work_dir)
    return {
        "accepted": stats["rows"],
        "answers": stats["unique_requests"],
        "acceptance_rate": round(stats["rows"] / max(stats["unique_requests"], 1), 4),
        "rejected_by_reason": stats["rejected_by_reason"],
        "tokens": stats["tokens"],
        "generate_s": stats["generate_s"],
        "tokens_per_s": round(stats["tokens_per_s"], 1),
        "answers_per_s": round(stats["unique_requests"] / max(stats["generate_s"], 1e-9), 3),
    }


def run_structured_bench(n_sentences: int = 200, max_tokens: int = 256, work_dir: Path = Path("work"),
                         kv_cache_memory_gib: float = 2.0, results_path: Path | None = RESULTS_PATH,
                         data_dir: Path | None = None) -> dict[str, Any]:
    from fsa_distill.core.config import DistillConfig
    from fsa_distill.models.teacher.smollm2 import NAME
    from fsa_distill.perf.bench_teacher import benchmark_reviews, engine_dtype, smollm2_engine

    config = DistillConfig(work_dir=work_dir)
    config.generation.prompts = ["analysis"]
    config.generation.max_new_tokens = max_tokens
    config.generation.reask_rejected = False
    config.generation.batch_size = n_sentences
    reviews = benchmark_reviews(n_sentences, data_dir)
    backend = smollm2_engine(work_dir, config, kv_cache_memory_gib)
    try:
        _arm(backend, reviews[:4], config, structured=True)  # warm-up: the regex's grammar compiled once, not timed
        free = _arm(backend, reviews, config, structured=False)
        constrained = _arm(backend, reviews, config, structured=True)
        dtype = engine_dtype(backend)
    finally:
        backend.close()
    results = {
        "sentences": len(reviews),
        "prompt": "analysis",
        "max_tokens": max_tokens,
        "decoding": "greedy, no re-ask",
        "without": free,
        "with": constrained,
        "acceptance_gain": round(constrained["acceptance_rate"] - free["acceptance_rate"], 4),
        "tokens_per_s_ratio": round(constrained["tokens_per_s"] / max(free["tokens_per_s"], 1e-9), 3),
        "model": NAME,
        "dtype": dtype,
        "machine": machine(),
    }
    if results_path is not None:
        write_json_atomically(Path(results_path), results)
    return results
