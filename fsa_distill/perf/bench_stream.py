"""What removing the local engine's chunk barrier gains: the generate stage on one SmolLM2 vLLM engine, fed
in chunks of `generation.batch_size` (each chunk waits for its slowest answer before the next starts: the
stage before streaming) against fed as a stream (`VLLMBackend.generate_stream`: the engine holds the same
`batch_size` requests, and a new one goes in as soon as one finishes).

Answers end at their natural EOS (varied lengths are what makes a barrier cost anything), greedy decoding, no
re-asks, both prompts, a fresh answer store per run, the runs alternating so the shared machine's load hits
both alike. Writes docs/results/stream.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fsa_distill.core.files import write_json_atomically
from fsa_distill.perf import RESULTS_DIR, machine

RESULTS_PATH = RESULTS_DIR / "stream.json"


class ChunkedTeacher:
    """The same engine behind the chunked interface only: `streaming` is False, so the stage calls `generate`
    once per chunk. Everything else is the wrapped backend's."""

    streaming = False
    distributed = False

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def _run(teacher: Any, reviews: list[dict[str, str]], config: Any) -> tuple[dict[str, Any], dict[str, str]]:
    from datasets import load_from_disk

    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

    with tempfile.TemporaryDirectory(prefix="bench-stream-") as temp:
        teacher.llm.reset_prefix_cache()  # neither arm reuses the other's cached prompt prefixes
        stats = generate_responses(reviews, GenerateSettings.of(config), Path(temp) / "out", teacher=teacher,
                                   cache_path=Path(temp) / "cache.sqlite", progress=False, work_dir=config.work_dir)
        answers = {}
        for folder in (Path(temp) / "out", Path(temp) / "out" / "rejected"):
            rows = load_from_disk(str(folder))
            answers.update({f"{r}/{p}": a for r, p, a in zip(rows["review_id"], rows["prompt"], rows["response"],
                                                              strict=True)})
    return stats, answers


def run_stream_bench(n_reviews: int = 64, batch_size: int = 16, max_tokens: int = 256, repeats: int = 2,
                     work_dir: Path = Path("work"), kv_cache_memory_gib: float = 2.0,
                     results_path: Path | None = RESULTS_PATH, data_dir: Path | None = None) -> dict[str, Any]:
    from fsa_distill.core.config import DistillConfig
    from fsa_distill.models.teacher.smollm2 import NAME
    from fsa_distill.perf.bench_teacher import benchmark_reviews, smollm2_engine

    config = DistillConfig(work_dir=work_dir)
    config.generation.max_new_tokens = max_tokens
    config.generation.reask_rejected = False
    config.generation.batch_size = batch_size
    reviews = benchmark_reviews(n_reviews, data_dir)
    backend = smollm2_engine(work_dir, config, kv_cache_memory_gib)
    arms = {"chunked": ChunkedTeacher(backend), "streamed": backend}
    totals = {name: {"tokens": 0, "generate_s": 0.0} for name in arms}
    answers: dict[str, dict[str, str]] = {}
    try:
        _run(backend, reviews[:4], config)  # warm-up, not timed
        for _ in range(repeats):
            for name, teacher in arms.items():
                stats, answers[name] = _run(teacher, reviews, config)
                totals[name]["tokens"] += stats["tokens"]
                totals[name]["generate_s"] += stats["generate_s"]
    finally:
        backend.close()
    per_s = {name: total["tokens"] / max(total["generate_s"], 1e-9) for name, total in totals.items()}
    same = sum(answers["chunked"].get(key) == text for key, text in answers["streamed"].items())
    results = {
        "reviews": len(reviews), "answers": len(answers["streamed"]), "batch_size": batch_size,
        "max_tokens": max_tokens, "repeats": repeats, "decoding": "greedy, natural EOS, no re-ask",
        "chunked_tokens_per_s": round(per_s["chunked"], 1), "streamed_tokens_per_s": round(per_s["streamed"], 1),
        "streamed_vs_chunked": round(per_s["streamed"] / max(per_s["chunked"], 1e-9), 3),
        "same_answers": same, "seconds": {name: round(total["generate_s"], 1) for name, total in totals.items()},
        "model": NAME,
        "machine": machine(),
    }
    if results_path is not None:
        write_json_atomically(Path(results_path), results)
    return results
