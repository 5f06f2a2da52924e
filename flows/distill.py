"""The `distill` flow: reviews → teacher → corpus → student → pretrain → finetune → evaluate → register.

Wiring only: every stage is a cached Prefect task in its stage module (tasks/stages/), which receives the
typed settings its key is made of; this module decides the order and what each stage's nested MLflow run
records.
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
from fsa_distill.flows.stage_runner import StageRunner
from fsa_distill.models.student import student_origin
from fsa_distill.tasks.stages.collect import collect_reviews
from fsa_distill.tasks.stages.corpus import CorpusSettings, corpus_stage
from fsa_distill.tasks.stages.finetune import FinetuneResult, FinetuneSettings, finetune_stage
from fsa_distill.tasks.stages.generate import GenerateSettings, TeacherAnswersResult, generate_stage
from fsa_distill.tasks.stages.pretrain import PretrainSettings, pretrain_stage
from fsa_distill.tasks.stages.records import ModelResult, Reviews
from fsa_distill.tasks.stages.student import StudentSettings, student_stage
from fsa_distill.tasks.stages.teacher_baseline import TeacherBaselineSettings, teacher_baseline_stage
from fsa_distill.tasks.stages.zeroshot import ZeroShotSettings, zeroshot_stage
from fsa_distill.tasks.study.teacher_quality import gold_train_sentences, numeric_figures, teacher_quality
from fsa_distill.tasks.tracking.champion import (
    comparison_metrics,
    load_test_sets,
    predictions_artifact,
    scored_set_tags,
    versus_champion,
)
from fsa_distill.tasks.tracking.cost import DEVICE_TAG, device_kind, run_cost
from fsa_distill.tasks.tracking.error_analysis import run_errors, teacher_samples
from fsa_distill.tasks.tracking.register import register_student
from fsa_distill.tasks.tracking.report import build_report, curves_from_mlflow, scores_from_finetune
from fsa_distill.tasks.tracking.runs import RunTracker
from fsa_distill.tasks.tracking.tables import aggregate_runs, flat_metrics, gate_metric


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
    (tasks/stages/stage_task.py) would serialise them anyway. There, Prefect enforces a stage's timeout
    with an alarm, which also interrupts a blocking call; in a task runner's worker thread it can only raise
    between two Python instructions, and says so with a warning on every run. `ray` submits them all at once
    to Ray workers."""
    runs = [(dataset, seed) for dataset in config.data.datasets for seed in config.finetune.seeds]
    settings = FinetuneSettings.of(config)
    if config.train.task_runner != "ray":
        return [run_stage(f"{label}/{dataset}/seed-{seed}", finetune_stage, live_metrics=True,
                          model=model, dataset=dataset, seed=seed, settings=settings)
                for dataset, seed in runs]
    with fanout_runner(config) as runner, _resource_requests(config):
        pending = [run_stage.submit(runner, f"{label}/{dataset}/seed-{seed}", finetune_stage,
                                    live_metrics=True, model=model, dataset=dataset, seed=seed, settings=settings)
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
    generation: TeacherAnswersResult,
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


def _record_cost(tracker: RunTracker, parent: str, generation: TeacherAnswersResult, stage_seconds: dict[str, float],
                 flow_seconds: float) -> dict[str, Any]:
    """The run's `cost/...` metrics and device tag on the parent run; returns them for the summary."""
    cost = run_cost(generation.model_dump(), stage_seconds, flow_seconds)
    device = device_kind()
    tracker.log_metrics(parent, cost)
    tracker.set_tags(parent, {DEVICE_TAG: device})
    return {"cost": cost, "device": device}


def _records(runs: list[FinetuneResult]) -> list[dict[str, Any]]:
    """Fine-tuning results as the plain records tasks/tracking/tables.py and tasks/tracking/report.py
    aggregate."""
    return [run.model_dump(mode="json") for run in runs]


def _teach(run_stage: StageRunner, tracker: RunTracker, parent: str, reviews: Reviews, config: DistillConfig
           ) -> tuple[TeacherAnswersResult, dict[str, Any], Any]:
    """The teacher's answers, how good they are (scored on gold-labelled sentences) and the corpus built from
    them, each recorded on the parent run."""
    generation = run_stage("generate", generate_stage, live_metrics=True, reviews=reviews,
                           settings=GenerateSettings.of(config))
    quality = teacher_quality([generation.dataset_dir], gold_train_sentences(config))
    tracker.log_metrics(parent, numeric_figures(quality))
    tracker.log_dict(parent, quality, "results/teacher_quality.json")
    corpus = run_stage("corpus", corpus_stage, generations=[generation], settings=CorpusSettings.of(config))
    tracker.log_dataset(parent, corpus.dataset_dir, "teacher-corpus", corpus.digest, "pretraining")
    return generation, quality, corpus


def _baselines(run_stage: StageRunner, model: ModelResult, config: DistillConfig
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rows beside the student's, when the config asks for them: its zero-shot polarity per dataset, and the
    teacher's own scores."""
    zero_shot: dict[str, Any] = {}
    if config.evaluate.zero_shot:
        for dataset in config.data.datasets:
            zero_shot[dataset] = run_stage(
                f"zero-shot/{dataset}", zeroshot_stage, model=model, dataset=dataset,
                settings=ZeroShotSettings.of(config)).model_dump(mode="json")
    teacher: dict[str, Any] = {}
    if config.evaluate.teacher_baseline:
        teacher = run_stage("teacher-baseline", teacher_baseline_stage,
                            settings=TeacherBaselineSettings.of(config)).datasets
    return zero_shot, teacher


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

        generation, quality, corpus = _teach(run_stage, tracker, parent, reviews, config)
        student = run_stage("student", student_stage, corpus=corpus, settings=StudentSettings.of(config))

        model = student if not config.pretrain.enabled else run_stage(
            "pretrain", pretrain_stage, live_metrics=True, student=student, corpus=corpus,
            settings=PretrainSettings.of(config))

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

        zero_shot, teacher = _baselines(run_stage, model, config)
        best = max(distilled_runs, key=lambda run: run.best_dev_f1)
        test_sets = load_test_sets(config)
        tracker.set_tags(parent, scored_set_tags(test_sets))
        for run in distilled_runs:
            tracker.log_artifact(parent, run.predictions_path, predictions_artifact(run.dataset, run.seed))
        registration = register_student(best.model_dir, sha256_tree(best.model_dir), mean_f1, parent,
                                        config.registry.model_name, config.mlflow_uri, task=best.task,
                                        engine=config.student.engine)
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
        for warning in filter(None, (collapse_warning(name, v) for name, v in summary["variety"].items())):
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
