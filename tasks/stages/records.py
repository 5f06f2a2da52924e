"""Typed results of the pipeline's stages: small records of paths, digests and numbers.

Prefect persists them with its JSON serializer, which writes each model's class beside its data and validates the
data back into that class, so a stage served from the cache returns the same typed object as a fresh run. Heavy
artefacts stay on disk; these hold their paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

Scores = dict[str, dict[str, float | int]]  # view → {precision, recall, f1, n_gold, n_pred, n_sentences}


class Record(BaseModel):
    # extra="ignore": the stage functions return dicts; a figure one of them adds later must not fail a run
    # (or its cached result) before it is declared here.
    model_config = ConfigDict(frozen=True, extra="ignore")


class Reviews(Record):
    """The collected reviews (tasks/stages/collect.py): one JSONL file, keyed by its content digest."""

    path: Path
    digest: str
    n_reviews: int
    sources: dict[str, int] = {}


class StageResult(Record):
    """What every cached stage returns: the key it ran under, the digest of its output (which keys the stages
    after it) and, for stages that log live metrics, the MLflow run that actually computed it."""

    key: str
    digest: str
    trained_in_run: str | None = None

    def metrics(self) -> dict[str, float]:
        """The result's top-level numbers, recorded on the stage's MLflow run."""
        return {name: value for name, value in self if isinstance(value, (int, float))}


class TeacherAnswersResult(StageResult):
    dataset_dir: Path
    rejected_dir: Path
    cache_path: str  # a SQLite path or the store's URL without its password
    teacher: str
    reviews: int
    reviews_used: int
    skipped_empty: int
    skipped_not_utf8: int
    truncated: int
    requests: int
    unique_requests: int
    generated: int
    cached: int
    cache_hit_rate: float
    rows: int
    acceptance_rate: float = 0.0
    engine: str = "local"
    replica_metrics: dict[str, float] = {}
    rejected: int
    rejected_by_reason: dict[str, int]
    reasked: int
    recovered: int
    tokens: int  # completion tokens the teacher generated in this run (answers served from the store: none)
    prompt_tokens: int = 0  # prompt tokens it read for them
    tokens_per_s: float
    generate_s: float
    plan_s: float = 0.0
    store_write_s: float = 0.0
    dataset_write_s: float = 0.0
    wall_s: float


class CorpusResult(StageResult):
    dataset_dir: Path
    n_train: int
    n_validation: int
    n_invalid: int
    n_duplicates: int


class ModelResult(StageResult):
    """A student model folder (the untrained student, or the pretrained one)."""

    model_dir: Path


class PretrainResult(ModelResult):
    final_train_loss: float | None
    final_eval_loss: float | None  # None: the corpus has no validation split
    steps: int
    resumed_from_step: int
    epochs: float
    tokens_per_s: float | None
    padding_ratio: float | None
    n_train: int
    n_validation: int


class FinetuneResult(ModelResult):
    """One (dataset, seed) fine-tuning run: its best-dev model and that model's test scores per view."""

    dataset: str  # task/dataset, e.g. atsa/rest14
    task: str
    seed: int
    best_dev_f1: float
    best_epoch: int
    scores: Scores
    predictions_path: Path
    dev_history: list[dict[str, float | int]]
    n_train: int
    n_dev: int
    n_test: int
    variety: dict[str, float | int | str] = {}  # benchmark/variety.py: distinct outputs, top output's share
    train_tokens_per_s: float | None = None  # real (unpadded) tokens per second of the epochs this run trained


class ZeroShotResult(StageResult):
    dataset: str  # task/dataset
    task: str
    split: str
    accuracy: float
    macro_f1: float
    n_aspects: int


class TeacherBaselineResult(StageResult):
    datasets: dict[str, dict[str, Any]]  # task/dataset → zero-shot and few-shot extraction scores of the teacher
