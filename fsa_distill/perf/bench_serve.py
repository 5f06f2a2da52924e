"""Serving speed and quality: the student on the torch engine (HF `generate`, float32) vs CTranslate2 int8, and
vs the SmolLM2 teacher on vLLM, on the same benchmark sentences in one run; F1 of each engine on the same test
split.

- Speed: the first `n_sentences` distinct sentences of rest14 (ATSA train, then test), decoded greedily by each
  engine in batches of `batch_size`, and answered by the teacher with the teacher baseline's few-shot
  extraction prompt (vLLM schedules all of them together). Every output is forced to `output_tokens` tokens
  (as in `bench train`), so the engines do equal work and speed does not depend on the weights: each size is
  timed with random weights (built offline, tokenizer trained on rest14 train). Model loading / engine
  start-up is timed apart and not counted.
- Quality: a student that says something is needed, so each of `quality_sizes` is built the same way and
  fine-tuned briefly on ATSA rest14 train with `tasks.stages.finetune.finetune` (the recipe is in the result;
  cached in the work dir), or `model` names an already fine-tuned folder. Both engines decode the rest14 ATSA
  test split naturally (`max_new_tokens`) and are scored with the project's scorer (normal view).
- Threads: torch and CTranslate2 get the same number (`threads`; default: as many cores as vLLM's CPU worker
  gets for the teacher), so the three share the hardware alike. The teacher runs first and its engine is
  closed before any student timing. The load average is recorded: the machine is shared.

Writes docs/results/serve.json (runs of the full 2,000 sentences only), keeping its `http` part: the
default student behind `mlflow models serve` (bench_serve_http.py, `--part http`).

    OMP_NUM_THREADS=2 fsa-distill bench serve --json
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from fsa_distill.core.files import write_json_atomically
from fsa_distill.perf import RESULTS_DIR

RESULTS_PATH = RESULTS_DIR / "serve.json"
FULL_RUN = 2000
GOALS = {"ct2_vs_torch_t5_small": 4.0, "t5_tiny_student_vs_teacher": 100.0, "f1_delta_x100": 0.5}


def speed_sentences(n_sentences: int, data_dir: Path | None) -> list[str]:
    """Distinct rest14 sentences, train split first, then test."""
    from fsa_distill.benchmark.data import load_sentences

    texts = [s["sentence"].strip() for split in ("train", "test")
             for s in load_sentences("atsa", "rest14", split, data_dir)]
    return list(dict.fromkeys(texts))[:n_sentences]


def finetuned_student(size: str, work: Path, epochs: int, learning_rate: float, vocab_size: int,
                      data_dir: Path | None) -> tuple[Path, dict[str, Any]]:
    """A `size` student built offline and fine-tuned on ATSA rest14 (cached in `work` under the recipe)."""
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.benchmark.targets import linearise
    from fsa_distill.core.config import DistillConfig
    from fsa_distill.core.digests import sha256_json
    from fsa_distill.models.student import build_student
    from fsa_distill.tasks.stages.finetune import FinetuneSettings, finetune

    recipe = {"size": size, "task": "atsa", "dataset": "rest14", "epochs": epochs, "learning_rate": learning_rate,
              "batch_size": 16, "vocab_size": vocab_size, "seed": 42, "init": "random (offline build)",
              "pretraining": "none", "dev_sentences": 200}
    key = sha256_json(recipe)[:16]
    folder = work / f"{size}-{key}"
    train = load_sentences("atsa", "rest14", "train", data_dir)
    student = folder / "initial"
    if not (student / "config.json").exists():
        build_student(size, student, [s["sentence"] for s in train] + [linearise(s, "atsa") for s in train],
                      vocab_size)
    config = DistillConfig(work_dir=work)
    config.data.data_dir = data_dir
    config.data.max_dev_sentences = recipe["dev_sentences"]
    config.data.max_test_sentences = 1  # the bench scores the full test split itself, on both engines
    config.finetune.epochs = epochs
    config.finetune.eval_every_epochs = epochs
    config.finetune.learning_rate = learning_rate
    config.evaluate.views = ["normal"]
    started = time.perf_counter()
    result = finetune(student, "atsa", "rest14", 42, FinetuneSettings.of(config), folder / "finetune", key=key)
    recipe["finetune_s"] = round(time.perf_counter() - started, 1)  # ~0 when cached from an earlier run
    return Path(result["model_dir"]), recipe


def time_engine(engine: Any, texts: list[str], batch_size: int, output_tokens: int) -> dict[str, Any]:
    """Reviews/s with every output forced to `output_tokens` tokens (min = max), so engines do equal work."""
    engine.decode(texts[:8], batch_size=batch_size, max_new_tokens=output_tokens)  # warm-up
    started = time.perf_counter()
    engine.decode(texts, batch_size=batch_size, max_new_tokens=output_tokens, min_new_tokens=output_tokens)
    seconds = time.perf_counter() - started
    return {"reviews_per_s": round(len(texts) / seconds, 2), "seconds": round(seconds, 2)}


def load_both(label: str, model_dir: Path, threads: int, work: Path) -> dict[str, tuple[Any, float]]:
    """The torch engine and a fresh int8 CTranslate2 export of the same folder, with their load times."""
    from fsa_distill.models.student.engines import CT2Engine, TorchEngine, export_ct2

    started = time.perf_counter()
    torch_engine = TorchEngine(model_dir, device="cpu")
    torch_load_s = time.perf_counter() - started
    started = time.perf_counter()
    ct2_engine = CT2Engine(export_ct2(model_dir, work / f"ct2-int8-{label}", "int8"), model_dir, device="cpu",
                           threads=threads)
    return {"torch": (torch_engine, torch_load_s), "ctranslate2_int8": (ct2_engine, time.perf_counter() - started)}


def bench_speed(label: str, model_dir: Path, texts: list[str], batch_size: int, output_tokens: int, threads: int,
                work: Path) -> dict[str, Any]:
    engines = load_both(label, model_dir, threads, work)
    result: dict[str, Any] = {engine: {**time_engine(loaded, texts, batch_size, output_tokens),
                                       "load_s": round(load_s, 2)}
                              for engine, (loaded, load_s) in engines.items()}
    result["ct2_vs_torch"] = round(result["ctranslate2_int8"]["reviews_per_s"] / result["torch"]["reviews_per_s"], 2)
    result["n_params"] = sum(p.numel() for p in engines["torch"][0].model.parameters())
    return result


def bench_quality(label: str, model_dir: Path, test: list[dict[str, Any]], batch_size: int, max_new_tokens: int,
                  threads: int, work: Path) -> dict[str, Any]:
    """F1 x 100 of both engines on the test split (natural greedy outputs, `predict`'s budget)."""
    from fsa_distill.benchmark.scorer import score_predictions

    result: dict[str, Any] = {}
    outputs = {}
    for engine, (loaded, _) in load_both(label, model_dir, threads, work).items():
        outputs[engine] = loaded.decode([s["sentence"] for s in test], batch_size=batch_size,
                                        max_new_tokens=max_new_tokens)
        scores = score_predictions("atsa", test, outputs[engine])
        result[engine] = {metric: round(100 * scores[metric], 2) for metric in ("f1", "precision", "recall")}
    same = sum(a == b for a, b in zip(outputs["torch"], outputs["ctranslate2_int8"], strict=True))
    result["f1_delta_x100"] = round(abs(result["ctranslate2_int8"]["f1"] - result["torch"]["f1"]), 2)
    result["identical_outputs"] = f"{same}/{len(test)}"
    return result


def run_serve_bench(n_sentences: int = FULL_RUN, sizes: tuple[str, ...] = ("t5-tiny", "t5-small"),
                    quality_sizes: tuple[str, ...] = ("t5-tiny",), model: Path | None = None,
                    finetune_epochs: int = 1, learning_rate: float = 1e-3, batch_size: int = 64,
                    output_tokens: int = 32, max_new_tokens: int = 100, threads: int | None = None,
                    with_teacher: bool = True, work_dir: Path = Path("work"), data_dir: Path | None = None,
                    results_path: Path | None = RESULTS_PATH) -> dict[str, Any]:
    """Speed of every size in `sizes` (random weights: the forced output length makes speed independent of
    them), F1 of a fine-tuned student of each of `quality_sizes` (or of `model`) on both engines."""
    import torch

    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.core.config import StudentConfig
    from fsa_distill.models.student import build_student
    from fsa_distill.models.teacher.vllm_backend import cpu_worker_cores
    from fsa_distill.perf.bench_train import (
        bench_teacher_inference,
        demo_config,
        start_teacher,
        stdout_to_stderr,
    )

    threads = threads or cpu_worker_cores()
    torch.set_num_threads(threads)
    work = Path(work_dir) / "bench-serve"
    texts = speed_sentences(n_sentences, data_dir)
    test = load_sentences("atsa", "rest14", "test", data_dir)
    vocab_size = StudentConfig().vocab_size

    teacher = None
    if with_teacher:  # first, and closed before any student timing
        config = demo_config(Path(work_dir))
        with stdout_to_stderr():
            started = time.perf_counter()
            backend, backend_name, note = start_teacher(config)
            startup_s = time.perf_counter() - started
            try:
                teacher = bench_teacher_inference(backend, texts, output_tokens, data_dir)
                teacher.update({"model": backend.model_id, "backend": backend_name, "note": note,
                                "startup_s": round(startup_s, 1)})
            finally:
                backend.close()

    train_texts = [s["sentence"] for s in load_sentences("atsa", "rest14", "train", data_dir)]
    speed: dict[str, Any] = {}
    for size in sizes:
        size_dir = work / f"random-{size}"
        if not (size_dir / "config.json").exists():
            build_student(size, size_dir, train_texts, vocab_size)
        speed[size] = bench_speed(size, size_dir, texts, batch_size, output_tokens, threads, work)
        if teacher is not None:
            for engine in ("torch", "ctranslate2_int8"):
                speed[size][engine]["student_vs_teacher"] = round(
                    speed[size][engine]["reviews_per_s"] / teacher["reviews_per_s"], 1)

    quality: dict[str, Any] = {}
    targets = {model.name: (model, {"model": str(model)})} if model else {
        size: finetuned_student(size, work, finetune_epochs, learning_rate, vocab_size, data_dir)
        for size in quality_sizes}
    for label, (model_dir, recipe) in targets.items():
        quality[label] = {"recipe": recipe, **bench_quality(f"ft-{label}", Path(model_dir), test, batch_size,
                                                            max_new_tokens, threads, work)}

    goals: dict[str, Any] = {}
    if "t5-small" in speed:
        goals["ct2_vs_torch_ge_4_t5_small"] = speed["t5-small"]["ct2_vs_torch"] >= GOALS["ct2_vs_torch_t5_small"]
    if "t5-tiny" in speed and teacher is not None:
        best = max(speed["t5-tiny"][e]["student_vs_teacher"] for e in ("torch", "ctranslate2_int8"))
        goals["t5_tiny_student_vs_teacher_ge_100"] = best >= GOALS["t5_tiny_student_vs_teacher"]
    goals["f1_delta_le_0.5"] = {label: r["f1_delta_x100"] <= GOALS["f1_delta_x100"] for label, r in quality.items()}
    result = {
        "n_sentences": len(texts), "sentences": "distinct rest14 sentences (ATSA train, then test)",
        "output_tokens": output_tokens,
        "speed_note": "every output forced to output_tokens tokens (students: min = max new tokens; teacher: "
                      "ignore_eos), so all engines do the same work; student weights random",
        "f1_on": f"rest14 ATSA test ({len(test)} sentences), normal view, x 100, natural greedy outputs "
                 f"(max_new_tokens {max_new_tokens})",
        "batch_size": batch_size, "threads": threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "teacher": teacher, "speed": speed, "quality": quality,
        "faster_engine": {size: "ctranslate2" if r["ct2_vs_torch"] > 1 else "torch" for size, r in speed.items()},
        "goals": goals,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                    "platform": platform.platform()},
    }
    if results_path is not None and len(texts) >= FULL_RUN:  # the `http` part (bench_serve_http.py) stays
        previous = json.loads(Path(results_path).read_text(encoding="utf-8")) if Path(results_path).exists() else {}
        write_json_atomically(Path(results_path), {**previous, **result})
    return result
