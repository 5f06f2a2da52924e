"""The reviews every arm of the study shares: the first N fine-tuning train sentences of each dataset (they
have gold labels, so the teacher's analyses of them can be scored) plus the reviews of the imported answers."""

from __future__ import annotations

from fsa_distill.benchmark.data import load_task_data
from fsa_distill.core.config import DistillConfig
from fsa_distill.tasks.stages.collect import unique_reviews
from fsa_distill.tasks.store.answer_files import AnswerRecord, read_answer_file


def benchmark_reviews(config: DistillConfig) -> list[dict[str, str]]:
    """`{id, text}` of the first `study.benchmark_reviews_per_dataset` train sentences fine-tuning uses."""
    reviews = []
    for name in config.data.datasets:
        task, dataset = name.split("/")
        train = load_task_data(task, dataset, config)["train"]
        for sentence in train[: config.study.benchmark_reviews_per_dataset]:
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
