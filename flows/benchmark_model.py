"""Benchmark a registered student: `models:/fsa-distill-student@champion` (or any model URI) on the benchmark test
views, logged as its own MLflow run so champions of different weeks can be compared on the same footing.

The model is downloaded through MLflow into `<work_dir>/benchmark/models/<name>-v<version>` (the registered pyfunc
keeps the HF folder under `artifacts/<folder>`), then scored with the project's scorer.

Not named flows/benchmark.py on purpose: Prefect loads an entrypoint as a script with its folder first on
sys.path, so a flows/benchmark.py would shadow the `benchmark` package for every flow in flows/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from fsa_distill.core.config import DistillConfig
from fsa_distill.flows.config_parameter import flow_config


def resolve_model_uri(model_uri: str, tracking_uri: str) -> tuple[str, str]:
    """`models:/name@alias` → (`models:/name/<version>`, version) so the download and the logs name one version."""
    from mlflow.tracking import MlflowClient

    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return model_uri, "unknown"
    name, alias = model_uri.removeprefix("models:/").split("@", 1)
    version = MlflowClient(tracking_uri).get_model_version_by_alias(name, alias).version
    return f"models:/{name}/{version}", str(version)


@task(name="download-model", retries=2, retry_delay_seconds=[10, 60])
def download_model(model_uri: str, version: str, config: DistillConfig) -> str:
    """Download the registered model once per version; returns the HF student folder inside it."""
    import mlflow

    mlflow.set_tracking_uri(config.mlflow_uri)
    name = model_uri.removeprefix("models:/").replace("/", "-v") if version != "unknown" else "model"
    target = (config.work_dir / "benchmark" / "models" / name).resolve()
    if not (target / "MLmodel").exists():
        target.mkdir(parents=True, exist_ok=True)
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target))
    # The pyfunc keeps the HF folder under artifacts/<its original folder name>: find it by its tokenizer
    # (the CTranslate2 export beside it has a config.json too, but no tokenizer).
    folders = sorted({path.parent for path in (target / "artifacts").glob("*/tokenizer*.json")})
    return str(folders[0] if folders else target)


def ct2_export_beside(model_dir: str) -> str | None:
    """The registered CTranslate2 export next to the HF folder (models/serving.py's `student_ct2`), if any."""
    from fsa_distill.models.student.engines import CT2_MODEL_FILE

    exports = sorted(path.parent for path in Path(model_dir).parent.glob(f"*/{CT2_MODEL_FILE}"))
    return str(exports[0]) if exports else None


@task(name="score-dataset")
def score_dataset(model_dir: str, dataset: str, config: DistillConfig) -> dict[str, Any]:
    """Predict the test split (test + hard_test) once, with the engine that is served (`student.engine`; for
    ctranslate2 the registered export, so quantisation is part of what is scored), and score every view."""
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.benchmark.scorer import score_predictions
    from fsa_distill.tasks.ops.predict import generate_predictions

    task_name, dataset_name = dataset.split("/")
    sentences = load_sentences(task_name, dataset_name, "test", config.data.data_dir)
    if config.data.max_test_sentences is not None:
        sentences = sentences[: config.data.max_test_sentences]
    predictions = generate_predictions(
        Path(model_dir),
        [sentence["sentence"] for sentence in sentences],
        config.finetune.eval_batch_size,
        config.finetune.max_new_tokens,
        engine=config.student.engine,
        ct2_dir=ct2_export_beside(model_dir),
    )
    scores = {view: score_predictions(task_name, sentences, predictions, view) for view in config.evaluate.views}
    return {"dataset": dataset, "scores": scores, "predictions": predictions, "engine": config.student.engine}


@flow(name="benchmark")
def benchmark(
    model_uri: str = "models:/fsa-distill-student@champion",
    profile: str = "demo",
    config_file: str | None = None,
    overrides: list[str] | None = None,
    config: DistillConfig | None = None,
) -> dict[str, Any]:
    """Score a registered model on the configured datasets and views; returns {model_uri, version, scores,
    mean_f1, mlflow_run_id}. `config`: an already resolved config, instead of profile + file + overrides."""
    from fsa_distill.tasks.tracking.runs import RunTracker

    logger = get_run_logger()
    config = flow_config(config, profile, config_file, overrides)
    tracker = RunTracker(config)
    pinned, version = resolve_model_uri(model_uri, config.mlflow_uri)
    run_id = tracker.start_parent(f"benchmark-{pinned.removeprefix('models:/')}",
                                  {"flow": "benchmark", "model_uri": model_uri, "model_version": version})
    try:
        model_dir = download_model(pinned, version, config)
        results = [score_dataset(model_dir, dataset, config) for dataset in config.data.datasets]
        metrics = {
            f"{result['dataset'].replace('/', '.')}.{view}.f1": score["f1"]
            for result in results
            for view, score in result["scores"].items()
        }
        normal = [result["scores"]["normal"]["f1"] for result in results if "normal" in result["scores"]]
        mean_f1 = sum(normal) / len(normal) if normal else float("nan")
        tracker.log_metrics(run_id, {**metrics, "mean_f1": mean_f1})
        tracker.set_tags(run_id, {"engine": config.student.engine})
        for result in results:
            lines = "".join(json.dumps({"prediction": p}, ensure_ascii=False) + "\n" for p in result["predictions"])
            tracker.log_text(run_id, lines, f"predictions/{result['dataset']}.jsonl")
        tracker.finish(run_id)
    except BaseException:
        tracker.finish(run_id, "FAILED")
        raise
    logger.info("benchmark of %s (v%s): mean F1 %.4f", model_uri, version, mean_f1)
    return {
        "model_uri": model_uri,
        "model_version": version,
        "mean_f1": mean_f1,
        "engine": config.student.engine,
        "scores": {result["dataset"]: result["scores"] for result in results},
        "mlflow_run_id": run_id,
    }
