"""The Prefect tasks of the `distill` flow: one per stage, each a thin wrapper over the stage's own module.

Above each task, its `StageSpec` declares the config it reads (and any content a config value names); its code
is found from the task function's imports. tasks/stages/keys.py turns both into the stage's key.

What the wrappers add, and nothing else:
- caching by that key (`StageCachePolicy`), persisted as JSON in `<work_dir>/prefect-results`;
- retries with backoff for transient faults only; a timeout per stage;
- a lock that keeps two model-heavy stages (teacher, training) of one work dir from running at once;
- the output folder `<work_dir>/stages/<stage>/<key>`, stable across runs so a killed stage resumes there.
Inputs and outputs are the typed records of tasks/stages/records.py (paths and digests): heavy artefacts stay on disk.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from prefect import task

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_file, sha256_json, sha256_tree
from fsa_distill.tasks.stages.keys import STAGE_TASK_OPTIONS, StageCachePolicy, StageSpec, current_stage_key
from fsa_distill.tasks.stages.records import (
    CorpusResult,
    FinetuneResult,
    ModelResult,
    PretrainResult,
    Reviews,
    TeacherAnswersResult,
    TeacherBaselineResult,
    ZeroShotResult,
)

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


def stage_dir(config: DistillConfig, stage: str, key: str) -> Path:
    """The stage's output folder: named by its key, so a killed run's next attempt resumes in the same place."""
    path = config.work_dir / "stages" / stage / key[:16]
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
    from fsa_distill.tasks.tracking.runs import RunTracker

    return RunTracker(config).metrics_logger(tracking_run_id)


def prefect_progress(key: str = "teacher-answers", every_s: float = 5.0):
    """A progress artifact of the running Prefect task (the UI's progress bar), updated at most every `every_s`
    seconds and at the end, so a million-answer run does not flood the API."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    state: dict[str, Any] = {"id": None, "last": 0.0}

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if state["id"] is not None and done < total and now - state["last"] < every_s:
            return
        percent = 100.0 * done / total if total else 100.0
        description = f"{done} of {total} teacher answers stored"
        try:
            if state["id"] is None:
                state["id"] = create_progress_artifact(percent, key=key, description=description)
            else:
                update_progress_artifact(state["id"], percent, description=description)
        except Exception as error:  # noqa: BLE001 - a progress bar must never fail the stage
            logging.getLogger(__name__).warning("progress artifact not updated: %s", error)
        state["last"] = now

    return report


def _replay_train_log(log_path: Path, log_metrics) -> None:
    """Log a multi-process pretraining's losses (rank 0's train_log.jsonl) to MLflow once it has finished: the
    processes themselves never log to MLflow, so there is exactly one writer."""
    import json

    if log_metrics is None or not log_path.exists():
        return
    for line in log_path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        metrics = {"train/loss": record["loss"], "train/lr": record["lr"]}
        if "eval_loss" in record:
            metrics["eval/loss"] = record["eval_loss"]
        log_metrics(metrics, record["step"])


def prompt_digests(config: DistillConfig) -> list[str]:
    """The templates' own digests: a custom `generation.prompt_dir` changes them without changing code."""
    from fsa_distill.models.teacher.prompts import PROMPT_DIR, load_prompt

    prompt_dir = config.generation.prompt_dir or PROMPT_DIR
    return [load_prompt(name, prompt_dir=prompt_dir).digest for name in config.generation.prompts]


GENERATE = StageSpec("generate", reads=("teacher", "generation"), content=prompt_digests)


@task(name="generate", cache_policy=StageCachePolicy(spec=GENERATE), timeout_seconds=48 * HOUR, **STAGE_TASK_OPTIONS)
def generate_stage(reviews: Reviews, config: DistillConfig, tracking_run_id: str | None = None) -> TeacherAnswersResult:
    """Teacher analyses + rewrites every review (per-review cache: only new reviews reach the teacher).
    The reviews are streamed from the collect stage's file and the digest comes from the dataset writer."""
    from fsa_distill.benchmark.importers import iter_review_corpus
    from fsa_distill.tasks.stages.generate import generate_responses

    key = current_stage_key()
    out_dir = stage_dir(config, GENERATE.name, key)
    with model_heavy(config):
        stats = generate_responses(
            iter_review_corpus(reviews.path), config, out_dir, log_metrics=_metrics_logger(config, tracking_run_id),
            on_progress=prefect_progress(),
        )
    return TeacherAnswersResult(**stats, trained_in_run=tracking_run_id, key=key)


def heldout_digest(config: DistillConfig) -> str | None:
    """The held-out file's bytes: replacing its content under the same path must rebuild the corpus."""
    path = config.corpus.heldout_file
    return sha256_file(path) if path is not None and Path(path).is_file() else None


CORPUS = StageSpec("corpus", reads=("corpus",), content=heldout_digest)


@task(name="corpus", cache_policy=StageCachePolicy(spec=CORPUS), timeout_seconds=2 * HOUR, **STAGE_TASK_OPTIONS)
def corpus_stage(generation: TeacherAnswersResult, config: DistillConfig) -> CorpusResult:
    """Teacher responses → review→response HF dataset (dedup, splits, `[NL]`)."""
    from fsa_distill.tasks.stages.corpus import build_corpus

    key = current_stage_key()
    out_dir = stage_dir(config, CORPUS.name, key)
    result = build_corpus([generation.dataset_dir], out_dir, config.corpus, config.corpus.heldout_file)
    return CorpusResult(**result, key=key)


STUDENT = StageSpec("student", reads=("student.model", "student.vocab_size"))  # not student.engine


@task(name="student", cache_policy=StageCachePolicy(spec=STUDENT), timeout_seconds=2 * HOUR, **STAGE_TASK_OPTIONS)
def student_stage(corpus: CorpusResult, config: DistillConfig) -> ModelResult:
    """Build (offline sizes) or fetch (hub id / folder) the untrained student and its tokenizer."""
    import datasets

    from fsa_distill.models.student import build_student

    key = current_stage_key()
    out_dir = stage_dir(config, STUDENT.name, key)
    train = datasets.load_from_disk(str(corpus.dataset_dir))["train"]
    texts = (text for batch in train.iter(batch_size=1000)  # streamed from the memory map, never a list
             for pair in zip(batch["source"], batch["target"], strict=True) for text in pair)
    model_dir = build_student(config.student.model, out_dir / "model", texts, config.student.vocab_size)
    return ModelResult(model_dir=model_dir, digest=sha256_tree(model_dir), key=key)


PRETRAIN = StageSpec("pretrain", reads=("pretrain",))


@task(name="pretrain", cache_policy=StageCachePolicy(spec=PRETRAIN), timeout_seconds=72 * HOUR, **STAGE_TASK_OPTIONS)
def pretrain_stage(
    student: ModelResult,
    corpus: CorpusResult,
    config: DistillConfig,
    tracking_run_id: str | None = None,
) -> PretrainResult:
    """Distillation pretraining on teacher responses; resumes from the last checkpoint in its folder."""
    from fsa_distill.tasks.stages.pretrain import pretrain

    key = current_stage_key()
    out_dir = stage_dir(config, PRETRAIN.name, key)
    log_metrics = _metrics_logger(config, tracking_run_id)
    tokenized_cache = config.work_dir / "cache" / "tokenized"  # keyed inside by corpus + tokenizer digests
    with model_heavy(config):
        if config.train.num_processes > 1:
            from fsa_distill.tasks.stages.launch import run_in_processes

            arguments = {"student_dir": student.model_dir, "corpus_dir": corpus.dataset_dir, "key": key,
                         "cache_dir": tokenized_cache}
            result = run_in_processes("pretrain", arguments, config, out_dir, config.train.num_processes)
            _replay_train_log(out_dir / "train_log.jsonl", log_metrics)
        else:
            result = pretrain(student.model_dir, corpus.dataset_dir, config.pretrain, out_dir,
                              log_metrics=log_metrics, key=key, cache_dir=tokenized_cache)
    return PretrainResult(**result, digest=sha256_tree(result["model_dir"]), trained_in_run=tracking_run_id)


FINETUNE = StageSpec("finetune", reads=("data", "finetune", "evaluate.views"))


@task(name="finetune", cache_policy=StageCachePolicy(spec=FINETUNE), timeout_seconds=24 * HOUR, **STAGE_TASK_OPTIONS)
def finetune_stage(
    model: ModelResult,
    dataset: str,
    seed: int,
    config: DistillConfig,
    tracking_run_id: str | None = None,
) -> FinetuneResult:
    """Fine-tune one (dataset, seed) and score its best-dev checkpoint on the test views."""
    from fsa_distill.tasks.stages.finetune import finetune

    task_name, dataset_name = dataset.split("/")
    key = current_stage_key()
    out_dir = stage_dir(config, FINETUNE.name, key)
    log_metrics = _metrics_logger(config, tracking_run_id)
    with model_heavy(config):
        if config.train.finetune_num_processes > 1:
            from fsa_distill.tasks.stages.launch import run_in_processes

            arguments = {"model_dir": model.model_dir, "task": task_name, "dataset": dataset_name, "seed": seed,
                         "key": key}
            result = run_in_processes("finetune", arguments, config, out_dir, config.train.finetune_num_processes)
            if log_metrics:  # the processes do not log to MLflow: rank 0's history is logged once they are done
                for record in result["dev_history"]:
                    log_metrics({f"finetune/{k}": v for k, v in record.items() if k != "epoch"}, record["epoch"])
        else:
            result = finetune(model.model_dir, task_name, dataset_name, seed, config, out_dir,
                              log_metrics=log_metrics, key=key)
    return FinetuneResult(
        **{**result, "dataset": dataset},  # the function names the dataset alone; the pipeline names task/dataset
        digest=sha256_tree(result["model_dir"]),
        trained_in_run=tracking_run_id,
    )


ZERO_SHOT = StageSpec("zero-shot", reads=("data", "finetune.eval_batch_size"))


@task(name="zero-shot", cache_policy=StageCachePolicy(spec=ZERO_SHOT), timeout_seconds=4 * HOUR, **STAGE_TASK_OPTIONS)
def zeroshot_stage(model: ModelResult, dataset: str, config: DistillConfig) -> ZeroShotResult:
    """Zero-shot polarity ranking with the distilled (not fine-tuned) student."""
    from fsa_distill.tasks.stages.zeroshot import evaluate_zero_shot

    task_name, dataset_name = dataset.split("/")
    with model_heavy(config):
        result = evaluate_zero_shot(model.model_dir, task_name, dataset_name, config)
    return ZeroShotResult(**{**result, "dataset": dataset}, digest=sha256_json(result), key=current_stage_key())


TEACHER_BASELINE = StageSpec("teacher-baseline", reads=("data", "teacher", "evaluate", "finetune.max_new_tokens"))


@task(
    name="teacher-baseline",
    cache_policy=StageCachePolicy(spec=TEACHER_BASELINE),
    timeout_seconds=24 * HOUR,
    **STAGE_TASK_OPTIONS,
)
def teacher_baseline_stage(config: DistillConfig) -> TeacherBaselineResult:
    """The teacher's zero-shot and few-shot scores on the same benchmark: the baseline row of every table."""
    from fsa_distill.models.teacher.factory import build_teacher
    from fsa_distill.tasks.stages.teacher_baseline import evaluate_teacher

    results: dict[str, dict] = {}
    with model_heavy(config), build_teacher(config.teacher, config.work_dir) as teacher:
        for dataset in config.data.datasets:
            task_name, dataset_name = dataset.split("/")
            results[dataset] = evaluate_teacher(teacher, task_name, dataset_name, config)
    return TeacherBaselineResult(datasets=results, digest=sha256_json(results), key=current_stage_key())
