"""The cost of the distributed path: the generate stage on `generation.engine: ray` (one replica, a Ray actor
owning a vLLM engine, answers streamed back) against `engine: local` (the engine in this process), same SmolLM2,
same prompts, every answer forced to `max_tokens` tokens, one command. Writes
docs/results/teacher_ray.json.

On a 2-core machine one replica is the honest setting: a second would split the same two cores. Both engines are
up for the whole run (an idle vLLM engine waits without computing); after a warm-up each, local and Ray runs
alternate `repeats` times, each with a fresh answer store, and medians are compared.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fsa_distill.core.files import write_json_atomically
from fsa_distill.perf import RESULTS_DIR

RESULTS_PATH = RESULTS_DIR / "teacher_ray.json"


def _timed_run(teacher: Any, reviews: list[dict[str, str]], config: Any) -> tuple[int, float, dict[str, Any]]:
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

    with tempfile.TemporaryDirectory(prefix="bench-teacher-ray-") as temp:
        started = time.perf_counter()
        stats = generate_responses(reviews, GenerateSettings.of(config), Path(temp) / "out", teacher=teacher,
                                   cache_path=Path(temp) / "cache.sqlite", progress=False, ignore_eos=True, work_dir=config.work_dir)
        return stats["tokens"], time.perf_counter() - started, stats


def run_ray_overhead_bench(n_prompts: int = 128, max_tokens: int = 200, work_dir: Path = Path("work"),
                           replicas: int = 1, kv_cache_memory_gib: float = 2.0, repeats: int = 2,
                           results_path: Path | None = RESULTS_PATH, data_dir: Path | None = None) -> dict[str, Any]:
    import ray

    from fsa_distill.core.config import DistillConfig
    from fsa_distill.models.teacher.factory import build_teacher
    from fsa_distill.models.teacher.ray_backend import RayTeacher
    from fsa_distill.models.teacher.smollm2 import ensure_smollm2
    from fsa_distill.perf.bench_teacher import benchmark_reviews

    model_dir, _ = ensure_smollm2(Path(work_dir) / "models")
    config = DistillConfig(work_dir=work_dir)
    config.teacher.model = str(model_dir)
    config.teacher.kv_cache_memory_gib = kv_cache_memory_gib
    config.generation.max_new_tokens = max_tokens
    config.generation.reask_rejected = False  # forced-length answers: same work on both paths
    config.generation.batch_size = n_prompts
    reviews = benchmark_reviews((n_prompts + 1) // 2, data_dir)

    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    micro_batch = max(1, n_prompts // (2 * replicas))  # two micro-batches in flight per replica
    local_runs, ray_runs = [], []
    try:
        with build_teacher(config.teacher, config.work_dir) as local_teacher, \
                RayTeacher(config.teacher, config.work_dir, replicas=replicas, micro_batch=micro_batch) as teacher:
            _timed_run(local_teacher, reviews[:2], config)  # warm-ups: first-step allocations, replica start
            _timed_run(teacher, reviews[:2], config)
            for _ in range(repeats):  # alternated: load changes on this shared machine hit both paths alike
                local_runs.append(_timed_run(local_teacher, reviews, config))
                ray_runs.append(_timed_run(teacher, reviews, config))
            replica_metrics = teacher.replica_metrics()
    finally:
        if owns_ray:
            ray.shutdown()

    def per_s(runs: list[tuple[int, float, dict]]) -> float:
        return round(runs[0][0] / statistics.median(run[1] for run in runs), 1)

    local_per_s, ray_per_s = per_s(local_runs), per_s(ray_runs)
    results = {
        "local_pipeline_tokens_per_s": local_per_s,
        "ray_pipeline_tokens_per_s": ray_per_s,
        "ray_vs_local": round(ray_per_s / local_per_s, 3),
        "goal": "ray >= 0.85 x local",
        "replicas": replicas,
        "n_prompts": local_runs[0][2]["unique_requests"],
        "max_tokens": max_tokens,
        "tokens": {"local": local_runs[0][0], "ray": ray_runs[0][0]},
        "seconds": {"local": [round(run[1], 2) for run in local_runs],
                    "ray": [round(run[1], 2) for run in ray_runs]},
        "ray_replica_metrics": replica_metrics,
        "model": Path(model_dir).name,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                    "platform": platform.platform()},
    }
    if results_path is not None:
        write_json_atomically(Path(results_path), results)
    return results
