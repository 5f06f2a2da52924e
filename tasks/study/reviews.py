"""The reviews every arm of the study shares: the first N fine-tuning train sentences of each dataset (they
have gold labels, so the teacher's analyses of them can be scored) plus the reviews of the imported answers."""

from __future__ import annotations

import json
from pathlib import Path

from fsa_distill.benchmark.data import load_task_data
from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_file
from fsa_distill.tasks.stages.collect import unique_reviews
from fsa_distill.tasks.stages.records import Reviews
from fsa_distill.tasks.store.answer_files import AnswerRecord, read_answer_file


def benchmark_reviews(config: DistillConfig, per_dataset: int | None = None) -> list[dict[str, str]]:
    """`{id, text}` of the first `per_dataset` (default `study.benchmark_reviews_per_dataset`) train sentences
    fine-tuning uses."""
    per_dataset = config.study.benchmark_reviews_per_dataset if per_dataset is None else per_dataset
    reviews = []
    for name in config.data.datasets:
        task, dataset = name.split("/")
        train = load_task_data(task, dataset, config.data)["train"]
        for sentence in train[:per_dataset]:
            reviews.append({"id": f"{name}:{sentence['ID']}", "text": sentence["sentence"]})
    return reviews


def imported_records(config: DistillConfig) -> list[AnswerRecord]:
    """The imported teacher's answers (arm D); empty when the study names no answer file."""
    path = config.study.imported_answers
    return read_answer_file(path) if path is not None else []


def study_reviews(config: DistillConfig) -> list[dict[str, str]]:
    """Benchmark reviews then imported reviews, duplicate texts dropped (first occurrence wins)."""
    candidates = benchmark_reviews(config) + [
        {"id": f"imported:{r.record_id}", "text": r.review} for r in imported_records(config)
    ]
    return unique_reviews(candidates)


def write_reviews(reviews: list[dict[str, str]], path: Path) -> Reviews:
    """A review file the generate stage reads, and its digest (the generate stage's upstream key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in reviews), encoding="utf-8")
    return Reviews(path=path, digest=sha256_file(path), n_reviews=len(reviews))
