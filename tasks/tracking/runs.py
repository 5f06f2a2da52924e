"""MLflow tracking for flow runs: one parent run per flow run, nested runs per stage, explicit run ids.

Stages run inside Prefect tasks, possibly in worker threads, so nothing here relies on MLflow's thread-local
"active run": every call names its run id and goes through `MlflowClient`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.redact import redact_secrets, redact_text
from fsa_distill.core.urls import SQLITE, parse_url

MetricsLogger = Callable[[dict[str, float], "int | None"], None]


def configure_tracking(config: DistillConfig) -> str:
    """Point MLflow at the configured server, or a SQLite file + artifact folder in the work dir; returns the
    experiment id."""
    uri = config.mlflow_uri  # checked and normalised when the config was read (core.urls.tracking_uri)
    dialect = parts.dialect if (parts := parse_url(uri)) else None  # None: a local folder (MLflow's file store)
    if dialect == SQLITE:
        config.work_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if dialect in (SQLITE, "file"):  # artifacts beside a local store, in the work dir
        artifact_location = (config.work_dir / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(config.tracking.experiment_name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a concurrent flow run
        return client.get_experiment_by_name(config.tracking.experiment_name).experiment_id


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → `section.key` params (MLflow params are flat strings of ≤ 6000 chars)."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


class RunTracker:
    """Thin helper over MlflowClient for one flow run's tree of runs."""

    def __init__(self, config: DistillConfig) -> None:
        self.config = config
        self.experiment_id = configure_tracking(config)
        self.client = MlflowClient(config.mlflow_uri)

    def start_parent(self, run_name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        run_id = run.info.run_id
        params = flatten(redact_secrets(self.config.model_dump(mode="json")))  # no credentials in MLflow
        items = list(params.items())
        for start in range(0, len(items), 90):  # MLflow accepts at most 100 params per batch
            batch = [mlflow.entities.Param(key, value[:6000]) for key, value in items[start : start + 90]]
            self.client.log_batch(run_id, params=batch)
        return run_id

    def start_child(self, parent_run_id: str, run_name: str, tags: dict[str, str] | None = None) -> str:
        all_tags = {"mlflow.parentRunId": parent_run_id, "stage": run_name, **(tags or {})}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        return run.info.run_id

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def metrics_logger(self, run_id: str) -> MetricsLogger:
        """A `log_metrics(metrics, step)` callback for stage functions; drops non-finite values."""

        def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
            timestamp = int(time.time() * 1000)
            batch = [
                mlflow.entities.Metric(key, float(value), timestamp, step or 0)
                for key, value in metrics.items()
                if isinstance(value, (int, float)) and math.isfinite(float(value))
            ]
            if batch:
                self.client.log_batch(run_id, metrics=batch)

        return log_metrics

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics_logger(run_id)(metrics, step)

    # Tags, dicts and texts go through `redact_secrets`: a URL with a password never reaches MLflow.
    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, redact_text(str(value)))

    def log_dict(self, run_id: str, payload: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, redact_secrets(payload), artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, redact_text(text), artifact_file)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_dataset(self, run_id: str, dataset_dir: Path, name: str, digest: str, context: str) -> None:
        """Record a dataset on disk (HF `save_to_disk` folder) as MLflow dataset inputs, one per split, with its
        digest and `<context>-<split>` as the input's context.

        `mlflow.log_input` logs to the thread's active run; this run is named by id (see the module docstring), so
        the client's `log_inputs` gets the dataset entity, built from the dataset's public `to_dict()`."""
        import datasets
        from mlflow.data.huggingface_dataset import from_huggingface
        from mlflow.entities import Dataset, DatasetInput, InputTag

        loaded = datasets.load_from_disk(str(dataset_dir))
        splits = loaded if isinstance(loaded, datasets.DatasetDict) else {"all": loaded}
        inputs = []
        for split_name, split in splits.items():
            dataset = from_huggingface(
                split, source=str(Path(dataset_dir).resolve()), name=f"{name}-{split_name}", digest=digest[:16]
            )
            fields = dataset.to_dict()  # name, digest, source, source_type, schema, profile
            entity = Dataset(name=fields["name"], digest=fields["digest"], source_type=fields["source_type"],
                             source=fields["source"], schema=fields.get("schema"), profile=fields.get("profile"))
            tags = [InputTag(key="mlflow.data.context", value=f"{context}-{split_name}")]  # as mlflow.log_input
            inputs.append(DatasetInput(dataset=entity, tags=tags))
        self.client.log_inputs(run_id, datasets=inputs)
