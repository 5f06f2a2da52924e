"""The `distill` flow: reviews → teacher → corpus → student → pretrain → finetune → evaluate → register.

Wiring only: every stage is a cached Prefect task from tasks/stages.py, which declares what the stage depends on
(its cache key); this module decides the order and what each stage's nested MLflow run records.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from fsa_distill.benchmark.variety import collapse_warning
from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_tree
from fsa_distill.core.redact import redact_url
from fsa_distill.flows.config_parameter import flow_config
from fsa_distill.models.student import student_origin
from fsa_distill.tasks import stages
from fsa_distill.tasks.champion import (
    comparison_metrics,
    load_test_sets,
    predictions_artifact,
    scored_set_tags,
    versus_champion,
)
from fsa_distill.tasks.collect import collect_reviews
from fsa_distill.tasks.cost import DEVICE_TAG, device_kind, run_cost
from fsa_distill.tasks.error_analysis import run_errors, teacher_samples
from fsa_distill.tasks.evaluate import aggregate_runs, flat_metrics, gate_metric
from fsa_distill.tasks.register import register_student
from fsa_distill.tasks.report import build_report, curves_from_mlflow, scores_from_finetune
from fsa_distill.tasks.results import FinetuneResult, GenerationResult, ModelResult, Reviews, StageResult
from fsa_distill.tasks.teacher_quality import gold_train_sentences, numeric_figures, teacher_quality
from fsa_distill.tasks.tracking import RunTracker


class StageRunner:
    """Runs one stage task inside a nested MLflow run and records whether it came from the cache."""

    def __init__(self, config: DistillConfig, tracker: RunTracker, parent_run_id: str) -> None:
        self.config = config
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.outcomes: dict[str, str] = {}
        self.metric_runs: dict[str, str] = {}  # stage label → the MLflow run holding its live metrics
        self.seconds: dict[str, float] = {}  # stage label → wall seconds in this run (cost per run)

    def __call__(self, label: str, stage_task: Any, *, live_metrics: bool = False, **parameters: Any) -> Any:
        child = self.tracker.start_child(self.parent_run_id, label)
        if live_metrics:
            parameters["tracking_run_id"] = child
        task_with_storage = stage_task.with_options(result_storage=stages.result_storage(self.config))
        started = time.perf_counter()
        try:
            state = task_with_storage(**parameters, return_state=True)
            result = state.result()
        except BaseException:
            self.tracker.finish(child, "FAILED")
            raise
        return self._record(label, child, state, result, started)

    def submit(self, runner: Any, label: str, stage_task: Any, *, live_metrics: bool = False,
               **parameters: Any) -> tuple[str, str, Any, float]:
        """Start the stage on `runner` (a started Prefect task runner) without waiting; `collect` finishes it.
        Resource requests for Ray (`prefect_ray.context.remote_options`) come from the caller's context."""
        child = self.tracker.start_child(self.parent_run_id, label)
        if live_metrics:
            parameters["tracking_run_id"] = child
        task_with_storage = stage_task.with_options(result_storage=stages.result_storage(self.config))
        return label, child, runner.submit(task_with_storage, parameters), time.perf_counter()

    def collect(self, pending: tuple[str, str, Any, float]) -> Any:
        """Wait for a submitted stage and record it as `__call__` does (its seconds include the queueing)."""
        label, child, future, started = pending
        try:
            result = future.result()
            state = future.state
        except BaseException:
            self.tracker.finish(child, "FAILED")
            raise
        return self._record(label, child, state, result, started)

    def _record(self, label: str, child: str, state: Any, result: Any, started: float) -> Any:
        cached = state.name == "Cached"
        self.outcomes[label] = "cached" if cached else "ran"
        if not isinstance(result, StageResult):  # e.g. a cached record whose class can no longer be imported
            raise TypeError(f"stage {label} returned a {type(result).__name__}, not a typed stage result")
        self.seconds[label] = time.perf_counter() - started
        self.tracker.log_metrics(child, {**result.metrics(), "stage_seconds": self.seconds[label]})
        self.tracker.set_tags(child, {"cached": cached, "digest": result.digest, "stage_key": result.key})
        if result.trained_in_run:  # a cached stage points at the run that actually computed it
            self.metric_runs[label] = result.trained_in_run
            if cached:
                self.tracker.set_tags(child, {"cached_from_run": result.trained_in_run})
        self.tracker.finish(child)
        return result


def _link_prefect_and_mlflow(mlflow_run_id: str, config: DistillConfig) -> None:
    """Record each run's id on the other: MLflow tags (set at creation) and a Prefect tag + artifact."""
    flow_run_id = flow_run.get_id()
    if flow_run_id is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id, tags=[*flow_run.get_tags(), f"mlflow:{mlflow_run_id}"])
    create_markdown_artifact(
        key="mlflow-run",
        markdown=(
            f"MLflow run `{mlflow_run_id}` in experiment `{config.tracking.experiment_name}` "
            f"at `{redact_url(config.mlflow_uri)}`.\n\n"
            f"Open it with `mlflow ui --backend-store-uri {redact_url(config.mlflow_uri)}`."
        ),
        description="The MLflow parent run of this flow run",
    )


def fanout_runner(config: DistillConfig) -> Any:
    """prefect-ray's RayTaskRunner on `train.ray_address` (or the Ray this process already started, or a new local
    one), for `train.task_runner: ray`: each run asks Ray for `train.cpus_per_run` / `gpus_per_run`, so a cluster
    runs as many at once as it has room for."""
    from prefect_ray import RayTaskRunner

    return RayTaskRunner(address=config.train.ray_address)


def _finetune_all(
    run_stage: StageRunner, label: str, model: ModelResult, config: DistillConfig
) -> list[FinetuneResult]:
    """Every (dataset, seed) run; results in submission order, so the table is the same whichever way they ran.

    `train.task_runner: thread` runs them one after another in the flow's own thread, as the model-heavy lock
    (tasks/stages.py) would serialise them anyway. There, Prefect enforces a stage's timeout with an alarm, which
    also interrupts a blocking call; in a task runner's worker thread it can only raise between two Python
    instructions, and says so with a warning on every run. `ray` submits them all at once to Ray workers."""
    runs = [(dataset, seed) for dataset in config.data.datasets for seed in config.finetune.seeds]
    if config.train.task_runner != "ray":
        return [run_stage(f"{label}/{dataset}/seed-{seed}", stages.finetune_stage, live_metrics=True,
                          model=model, dataset=dataset, seed=seed, config=config)
                for dataset, seed in runs]
    with fanout_runner(config) as runner, _resource_requests(config):
        pending = [run_stage.submit(runner, f"{label}/{dataset}/seed-{seed}", stages.finetune_stage,
                                    live_metrics=True, model=model, dataset=dataset, seed=seed, config=config)
                   for dataset, seed in runs]
        return [run_stage.collect(one) for one in pending]


def _resource_requests(config: DistillConfig) -> Any:
    """What each fine-tuning run asks Ray for, and the Prefect API the Ray worker reports to: this flow's, even
    when it is the ephemeral one (without it each worker would start an ephemeral server of its own)."""
    from prefect_ray.context import remote_options

    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    return remote_options(num_cpus=config.train.cpus_per_run, num_gpus=config.train.gpus_per_run,
                          runtime_env={"env_vars": {"PREFECT_API_URL": api_url}})


def write_report(
    config: DistillConfig,
    summary: dict[str, Any],
    distilled_runs: list[FinetuneResult],
    baseline_runs: list[FinetuneResult],
    generation: GenerationResult,
    metric_runs: dict[str, str],
    test_sets: dict[str, list[dict[str, Any]]],
) -> Path:
    """The run's HTML report (vs the champion, F1 by dataset × view, distilled vs undistilled, loss curves,
    what the student gets wrong, teacher answers and rejections)."""
    curves = curves_from_mlflow(
        config.mlflow_uri,
        metric_runs,
        ["train/loss", "eval/loss", "finetune/train_loss", "finetune/dev_f1"],
    )
    results = {
        "title": f"fsa-distill {config.profile} — MLflow run {summary['mlflow_run_id']}",
        "summary": {key: summary[key] for key in ("mean_f1", "model_name", "model_version", "decision", "seconds",
                                                  "student")},
        "variety": summary["variety"],
        "scores": scores_from_finetune(_records(distilled_runs), "distilled")
        + scores_from_finetune(_records(baseline_runs), "undistilled"),
        "curves": {name.replace("/train/", "/train_").replace("/eval/", "/eval_"): points for name, points in curves.items()},
        "rejections": generation.rejected_by_reason,
        "teacher_quality": summary.get("teacher_quality", {}),
        "versus_champion": summary.get("versus_champion", {}),
        "errors": run_errors(_records(distilled_runs), test_sets),
        "teacher_samples": teacher_samples(generation.dataset_dir, generation.rejected_dir),
        "cost": {**summary.get("cost", {}), "device": summary.get("device", "")},
    }
    return build_report(results, config.work_dir / "reports" / summary["mlflow_run_id"])


def _record_cost(tracker: RunTracker, parent: str, generation: GenerationResult, stage_seconds: dict[str, float],
                 flow_seconds: float) -> dict[str, Any]:
    """The run's `cost/...` metrics and device tag on the parent run; returns them for the summary."""
    cost = run_cost(generation.model_dump(), stage_seconds, flow_seconds)
    device = device_kind()
    tracker.log_metrics(parent, cost)
    tracker.set_tags(parent, {DEVICE_TAG: device})
    return {"cost": cost, "device": device}


def _records(runs: list[FinetuneResult]) -> list[dict[str, Any]]:
    """Fine-tuning results as the plain records tasks/evaluate.py and tasks/report.py aggregate."""
    return [run.model_dump(mode="json") for run in runs]


def run_distill(config: DistillConfig) -> dict[str, Any]:
    """The whole distillation for an already-resolved config (the flow body, callable from tests)."""
    logger = get_run_logger()
    tracker = RunTracker(config)
    flow_run_id = str(flow_run.get_id() or "")
    parent = tracker.start_parent(
        run_name=f"distill-{config.profile}-{flow_run.get_name() or 'local'}",
        tags={"prefect.flow_run_id": flow_run_id, "profile": config.profile, "config_digest": config.digest()},
    )
    tracker.log_dict(parent, config.model_dump(mode="json"), "config/resolved_config.json")
    _link_prefect_and_mlflow(parent, config)
    run_stage = StageRunner(config, tracker, parent)
    started = time.perf_counter()
    try:
        reviews = Reviews(**collect_reviews(config, config.work_dir / "stages" / "collect"))
        tracker.log_metrics(parent, {"reviews": reviews.n_reviews})

        generation = run_stage("generate", stages.generate_stage, live_metrics=True, reviews=reviews, config=config)
        quality = teacher_quality([generation.dataset_dir], gold_train_sentences(config))
        tracker.log_metrics(parent, numeric_figures(quality))
        tracker.log_dict(parent, quality, "results/teacher_quality.json")
        corpus = run_stage("corpus", stages.corpus_stage, generation=generation, config=config)
        tracker.log_dataset(parent, corpus.dataset_dir, "teacher-corpus", corpus.digest, "pretraining")

        student = run_stage("student", stages.student_stage, corpus=corpus, config=config)

        model = student
        if config.pretrain.enabled:
            model = run_stage(
                "pretrain", stages.pretrain_stage, live_metrics=True, student=student, corpus=corpus, config=config
            )

        distilled_runs = _finetune_all(run_stage, "finetune", model, config)
        table = aggregate_runs(_records(distilled_runs))
        mean_f1 = gate_metric(table)
        rows = {"student (distilled)" if config.pretrain.enabled else "student": table}
        tracker.log_metrics(parent, {**flat_metrics(table, "distilled"), "mean_f1": mean_f1})

        baseline_runs: list[FinetuneResult] = []
        if config.evaluate.undistilled_baseline and config.pretrain.enabled:
            baseline_runs = _finetune_all(run_stage, "finetune-undistilled", student, config)
            baseline = aggregate_runs(_records(baseline_runs))
            rows["student (undistilled)"] = baseline
            tracker.log_metrics(parent, {**flat_metrics(baseline, "undistilled"), "undistilled_mean_f1": gate_metric(baseline)})

        zero_shot: dict[str, Any] = {}
        if config.evaluate.zero_shot:
            for dataset in config.data.datasets:
                zero_shot[dataset] = run_stage(
                    f"zero-shot/{dataset}", stages.zeroshot_stage, model=model, dataset=dataset, config=config
                ).model_dump(mode="json")
        teacher: dict[str, Any] = {}
        if config.evaluate.teacher_baseline:
            teacher = run_stage("teacher-baseline", stages.teacher_baseline_stage, config=config).datasets

        best = max(distilled_runs, key=lambda run: run.best_dev_f1)
        test_sets = load_test_sets(config)
        tracker.set_tags(parent, scored_set_tags(test_sets))
        for run in distilled_runs:
            tracker.log_artifact(parent, run.predictions_path, predictions_artifact(run.dataset, run.seed))
        registration = register_student(
            best.model_dir,
            sha256_tree(best.model_dir),
            mean_f1,
            parent,
            config.registry.model_name,
            config.mlflow_uri,
            task=best.task,
            engine=config.student.engine,
        )
        comparison = versus_champion(config, registration, _records(distilled_runs), test_sets)
        tracker.log_metrics(parent, comparison_metrics(comparison))
        summary = {
            "mlflow_run_id": parent,
            "flow_run_id": flow_run_id,
            "experiment": config.tracking.experiment_name,
            "tracking_uri": redact_url(config.mlflow_uri),
            "mean_f1": mean_f1,
            "results": rows,
            "zero_shot": zero_shot,
            "teacher": teacher,
            "teacher_quality": {generation.teacher: quality},
            "student": student_origin(config.student.model),
            "variety": {f"{run.dataset}/seed-{run.seed}": run.variety for run in distilled_runs},
            "stages": run_stage.outcomes,
            "versus_champion": comparison,
            "seconds": time.perf_counter() - started,
            **registration,
        }
        for name, variety in summary["variety"].items():
            if warning := collapse_warning(name, variety):
                logger.warning(warning)
        summary.update(_record_cost(tracker, parent, generation, run_stage.seconds, summary["seconds"]))
        tracker.log_dict(parent, summary, "results/summary.json")
        report_path = write_report(config, summary, distilled_runs, baseline_runs, generation, run_stage.metric_runs,
                                   test_sets)
        tracker.log_artifact(parent, report_path.parent, "report")
        summary["report_path"] = str(report_path)
        tracker.log_metrics(parent, {"flow_seconds": summary["seconds"]})
        tracker.finish(parent)
        logger.info("distill finished: mean F1 %.4f, model %s v%s", mean_f1, registration["model_name"], registration["model_version"])
        return summary
    except BaseException:
        tracker.finish(parent, "FAILED")
        raise


@flow(name="distill")
def distill(
    profile: str = "demo",
    config_file: str | None = None,
    overrides: list[str] | None = None,
    config: DistillConfig | None = None,
) -> dict[str, Any]:
    """Distil the teacher into the student. Callers that resolved the config (the CLI, the retrain flow) pass it
    as `config`; deployments pass a profile (+ config file + `key=value` overrides), resolved here once."""
    return run_distill(flow_config(config, profile, config_file, overrides))
