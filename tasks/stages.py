"""The Prefect tasks of the `distill` flow: one per stage, each a thin wrapper over the stage's own module.

What the wrappers add, and nothing else:
- caching by the explicit `stage_key` (see tasks/caching.py), persisted as JSON in `<work_dir>/prefect-results`;
- retries with backoff for transient faults only; a timeout per stage;
- a lock that keeps two model-heavy stages (teacher, training) of one work dir from running at once;
- the output folder `<work_dir>/stages/<stage>/<key>`, stable across runs so a killed stage resumes there.
Inputs and outputs are small JSON dicts with paths and digests: heavy artefacts stay on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filelock import FileLock
from prefect import task

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_json, sha256_tree
from fsa_distill.tasks.caching import STAGE_TASK_OPTIONS

HOUR = 3600


def model_heavy(config: DistillConfig) -> FileLock:
    """One model-heavy stage (teacher engine, training) at a time per work dir, across flow runs.

    A file lock rather than a Prefect global concurrency limit: the OS releases it when its holder dies, while a
    Prefect slot held by a killed run stays taken until its lease is reaped — and with the ephemeral server's
    in-memory lease storage, never.
    """
    path = config.work_dir / "locks" / "model-heavy.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def stage_dir(config: DistillConfig, stage: str, stage_key: str) -> Path:
    path = config.work_dir / "stages" / stage / stage_key[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


def result_storage(config: DistillConfig) -> Path:
    """Where Prefect persists stage results (the cache records) for this work dir (a local folder)."""
    path = (config.work_dir / "prefect-results").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _metrics_logger(config: DistillConfig, tracking_run_id: str | None):
    if tracking_run_id is None:
        return None
    from fsa_distill.tasks.tracking import RunTracker

    return RunTracker(config).metrics_logger(tracking_run_id)


@task(name="generate", timeout_seconds=48 * HOUR, **STAGE_TASK_OPTIONS)
def generate_stage(
    stage_key: str, reviews: dict[str, Any], config: DistillConfig, tracking_run_id: str | None = None
) -> dict[str, Any]:
    """Teacher analyses + rewrites every review (per-review cache: only new reviews reach the teacher)."""
    import datasets

    from fsa_distill.benchmark.importers import read_review_corpus
    from fsa_distill.tasks.generate import generate_responses

    out_dir = stage_dir(config, "generate", stage_key)
    review_rows = read_review_corpus(Path(reviews["path"]))
    with model_heavy(config):
        stats = generate_responses(
            review_rows, config, out_dir, log_metrics=_metrics_logger(config, tracking_run_id)
        )
    dataset = datasets.load_from_disk(stats["dataset_dir"])
    rows = sorted(zip(dataset["review_id"], dataset["prompt"], dataset["response"], strict=True))
    return {**stats, "digest": sha256_json(rows), "trained_in_run": tracking_run_id}


@task(name="corpus", timeout_seconds=2 * HOUR, **STAGE_TASK_OPTIONS)
def corpus_stage(stage_key: str, generation: dict[str, Any], config: DistillConfig) -> dict[str, Any]:
    """Teacher responses → review→response HF dataset (dedup, splits, `[NL]`)."""
    from fsa_distill.tasks.corpus import build_corpus

    out_dir = stage_dir(config, "corpus", stage_key)
    return build_corpus([Path(generation["dataset_dir"])], out_dir, config.corpus, config.corpus.heldout_file)


@task(name="student", timeout_seconds=2 * HOUR, **STAGE_TASK_OPTIONS)
def student_stage(stage_key: str, corpus: dict[str, Any], config: DistillConfig) -> dict[str, Any]:
    """Build (offline sizes) or fetch (hub id / folder) the untrained student and its tokenizer."""
    import datasets

    from fsa_distill.models.student import build_student

    out_dir = stage_dir(config, "student", stage_key)
    train = datasets.load_from_disk(corpus["dataset_dir"])["train"]
    texts = [text for pair in zip(train["source"], train["target"], strict=True) for text in pair]
    model_dir = build_student(config.student.model, out_dir / "model", texts, config.student.vocab_size)
    return {"model_dir": str(model_dir), "digest": sha256_tree(model_dir)}


@task(name="pretrain", timeout_seconds=72 * HOUR, **STAGE_TASK_OPTIONS)
def pretrain_stage(
    stage_key: str,
    student: dict[str, Any],
    corpus: dict[str, Any],
    config: DistillConfig,
    tracking_run_id: str | None = None,
) -> dict[str, Any]:
    """Distillation pretraining on teacher responses; resumes from the last checkpoint in its folder."""
    from fsa_distill.tasks.pretrain import pretrain

    out_dir = stage_dir(config, "pretrain", stage_key)
    with model_heavy(config):
        result = pretrain(
            Path(student["model_dir"]),
            Path(corpus["dataset_dir"]),
            config.pretrain,
            out_dir,
            log_metrics=_metrics_logger(config, tracking_run_id),
        )
    return {**result, "digest": sha256_tree(result["model_dir"]), "trained_in_run": tracking_run_id}


@task(name="finetune", timeout_seconds=24 * HOUR, **STAGE_TASK_OPTIONS)
def finetune_stage(
    stage_key: str,
    model: dict[str, Any],
    dataset: str,
    seed: int,
    config: DistillConfig,
    tracking_run_id: str | None = None,
) -> dict[str, Any]:
    """Fine-tune one (dataset, seed) and score its best-dev checkpoint on the test views."""
    from fsa_distill.tasks.finetune import finetune

    task_name, dataset_name = dataset.split("/")
    out_dir = stage_dir(config, "finetune", stage_key)
    with model_heavy(config):
        result = finetune(
            Path(model["model_dir"]),
            task_name,
            dataset_name,
            seed,
            config,
            out_dir,
            log_metrics=_metrics_logger(config, tracking_run_id),
        )
    return {
        **result,
        "dataset": dataset,
        "seed": seed,
        "digest": sha256_tree(result["model_dir"]),
        "trained_in_run": tracking_run_id,
    }


@task(name="zero-shot", timeout_seconds=4 * HOUR, **STAGE_TASK_OPTIONS)
def zeroshot_stage(stage_key: str, model: dict[str, Any], dataset: str, config: DistillConfig) -> dict[str, Any]:
    """Zero-shot polarity ranking with the distilled (not fine-tuned) student."""
    from fsa_distill.tasks.zeroshot import evaluate_zero_shot

    task_name, dataset_name = dataset.split("/")
    with model_heavy(config):
        result = evaluate_zero_shot(Path(model["model_dir"]), task_name, dataset_name, config)
    return {**result, "dataset": dataset, "digest": sha256_json(result)}


@task(name="teacher-baseline", timeout_seconds=24 * HOUR, **STAGE_TASK_OPTIONS)
def teacher_baseline_stage(stage_key: str, config: DistillConfig) -> dict[str, Any]:
    """The teacher's zero-shot and few-shot scores on the same benchmark: the baseline row of every table."""
    from fsa_distill.models.teacher.factory import build_teacher
    from fsa_distill.tasks.zeroshot import evaluate_teacher

    results: dict[str, Any] = {}
    with model_heavy(config), build_teacher(config.teacher, config.work_dir) as teacher:
        for dataset in config.data.datasets:
            task_name, dataset_name = dataset.split("/")
            results[dataset] = evaluate_teacher(teacher, task_name, dataset_name, config)
    return {"datasets": results, "digest": sha256_json(results)}
