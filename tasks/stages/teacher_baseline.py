"""The teacher as the baseline row of every results table: zero-shot polarity and few-shot extraction.

Zero-shot: for each gold aspect (conflict skipped) the teacher is asked for its polarity with a constrained
prompt (answer with one word); the first polarity word of the reply is scored with accuracy and macro-F1, as the
student's zero-shot ranking is (tasks/stages/zeroshot.py). Few-shot: after a few solved training sentences the teacher
extracts every aspect with its sentiment, and the first line of its reply is scored like a student prediction.

Both prompts are versioned templates (models/teacher/prompts/teacher_*.v1.txt) loaded with `load_prompt`, so
editing one changes its digest, which the stage's cache key and the result both carry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from prefect import task

from fsa_distill.core.config import DataConfig, DistillConfig, EvaluateConfig, TeacherConfig
from fsa_distill.core.digests import sha256_json
from fsa_distill.models.teacher.base import TeacherBackend
from fsa_distill.models.teacher.prompts import PromptTemplate, load_prompt
from fsa_distill.tasks.stages.keys import Placement, StageSettings
from fsa_distill.tasks.stages.records import StageResult
from fsa_distill.tasks.stages.stage_task import current_stage_key, model_heavy, stage_task_options
from fsa_distill.tasks.stages.zeroshot import aspect_items, polarity_metrics


class TeacherBaselineSettings(StageSettings):
    """What scoring the teacher reads: the benchmark, the teacher, what to evaluate and the decoding budget."""

    data: DataConfig
    teacher: TeacherConfig
    evaluate: EvaluateConfig
    max_new_tokens: int

    @classmethod
    def of(cls, config: DistillConfig) -> TeacherBaselineSettings:
        return cls(data=config.data, teacher=config.teacher, evaluate=config.evaluate,
                   max_new_tokens=config.finetune.max_new_tokens)


class TeacherBaselineResult(StageResult):
    datasets: dict[str, dict[str, Any]]  # task/dataset → zero-shot and few-shot extraction scores of the teacher

N_FEW_SHOT = 4
POLARITY_ANSWER_TOKENS = 4  # the prompt asks for one word; a few tokens leave room for "The answer: …"
UNPARSED = "unparsed"


def polarity_prompt(task: str) -> PromptTemplate:
    """Zero-shot polarity of one aspect: placeholders {review} and {aspect}."""
    return load_prompt(f"teacher_polarity_{task}")


def extraction_prompt(task: str) -> PromptTemplate:
    """Few-shot extraction of every aspect with its sentiment: placeholders {review} and {examples}."""
    return load_prompt(f"teacher_extraction_{task}")


def few_shot_block(task: str, examples: Sequence[dict[str, Any]]) -> str:
    """Solved benchmark sentences, in the answer format the scorer parses (`term | polarity ; …`)."""
    from fsa_distill.benchmark.targets import linearise

    return "".join(f"Sentence: {example['sentence']}\nAnswer: {linearise(example, task)}\n\n"
                   for example in examples)


def first_polarity(text: str) -> str:
    """The first positive / negative / neutral word of a reply, or `unparsed` (counted as wrong)."""
    match = re.search(r"\b(positive|negative|neutral)\b", text.lower())
    return match.group(1) if match else UNPARSED


def teacher_baseline(teacher_backend: TeacherBackend, task: str, sentences: Sequence[dict[str, Any]],
                     few_shot_examples: Sequence[dict[str, Any]],
                     views: Sequence[str] = ("normal", "implicit", "multi"),
                     max_new_tokens: int = 100) -> dict[str, Any]:
    """The teacher as a baseline row: zero-shot polarity (constrained prompt) and few-shot extraction per view."""
    from fsa_distill.benchmark.scorer import score_predictions

    polarity, extraction = polarity_prompt(task), extraction_prompt(task)
    items = aspect_items(sentences, task)
    answers = teacher_backend.generate([
        polarity.request(item["sentence"], fields={"aspect": item["aspect"]}, max_tokens=POLARITY_ANSWER_TOKENS,
                         temperature=0.0)
        for item in items
    ]) if items else []
    predicted = [first_polarity(answer.text) for answer in answers]
    zero_shot = polarity_metrics([item["gold"] for item in items], predicted)
    zero_shot["unparsed"] = predicted.count(UNPARSED)

    examples = few_shot_block(task, few_shot_examples)
    outputs = teacher_backend.generate([
        extraction.request(sentence["sentence"], fields={"examples": examples}, max_tokens=max_new_tokens,
                           temperature=0.0)
        for sentence in sentences
    ]) if sentences else []
    predictions = [output.text.strip().splitlines()[0] if output.text.strip() else "" for output in outputs]
    scores = {view: score_predictions(task, list(sentences), predictions, view=view) for view in views}
    return {"model_id": getattr(teacher_backend, "model_id", "teacher"), "zero_shot": zero_shot,
            "extraction": scores, "extraction_predictions": predictions,
            "prompts": [polarity.key, extraction.key]}


def evaluate_teacher(teacher_backend: TeacherBackend, task: str, dataset: str, settings: TeacherBaselineSettings
                     ) -> dict[str, Any]:
    """Teacher-baseline stage: zero-shot polarity and few-shot extraction (the first N_FEW_SHOT train
    sentences with aspects as examples) on the first `evaluate.teacher_max_sentences` test sentences."""
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.benchmark.targets import linearise

    data = settings.data
    sentences = load_sentences(task, dataset, "test", data.data_dir)[:settings.evaluate.teacher_max_sentences]
    examples = [s for s in load_sentences(task, dataset, "train", data.data_dir) if linearise(s, task)][:N_FEW_SHOT]
    result = teacher_baseline(teacher_backend, task, sentences, examples, views=list(settings.evaluate.views),
                              max_new_tokens=settings.max_new_tokens)
    return {"task": task, "dataset": dataset, "n_sentences": len(sentences), **result}


@task(**stage_task_options("teacher-baseline", timeout_hours=24))
def teacher_baseline_stage(settings: TeacherBaselineSettings, placement: Placement) -> TeacherBaselineResult:
    """The teacher's zero-shot and few-shot scores on the same benchmark: the baseline row of every table."""
    from fsa_distill.models.teacher.factory import build_teacher

    results: dict[str, dict] = {}
    with model_heavy(placement), build_teacher(settings.teacher, placement.work_dir) as teacher:
        for dataset in settings.data.datasets:
            task_name, dataset_name = dataset.split("/")
            results[dataset] = evaluate_teacher(teacher, task_name, dataset_name, settings)
    return TeacherBaselineResult(datasets=results, digest=sha256_json(results), key=current_stage_key())
