"""What every stage's typed result shares, and the records several stages pass on (reviews, a model folder); each
stage's own record lives in its stage module.

Prefect persists them with its JSON serializer, which writes each model's class beside its data and validates the
data back into that class, so a stage served from the cache returns the same typed object as a fresh run. Heavy
artefacts stay on disk; these hold their paths.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

Scores = dict[str, dict[str, float | int]]  # view → {precision, recall, f1, n_gold, n_pred, n_sentences}


class Record(BaseModel):
    # extra="forbid": a field a stage returns that its record does not declare is an error, never dropped.
    model_config = ConfigDict(frozen=True, extra="forbid")


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


class ModelResult(StageResult):
    """A student model folder (the untrained student, or the pretrained one)."""

    model_dir: Path
