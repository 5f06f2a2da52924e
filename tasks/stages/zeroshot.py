"""The student's zero-shot baseline: aspect polarity without fine-tuning, by label likelihood.

The polarity of a given aspect is the label the student finds most likely. The encoder reads the
sentence (as in pretraining, where it read reviews) and the decoder is scored on the teacher's own analysis
format, `Opinion Target 1: "<term>"[NL]Sentiment: <Label>` (ACSA: `Aspect: "<category>"[NL]Sentiment: <Label>`):
the sum of the label tokens' log-probabilities after that prefix, argmax over positive / negative / neutral.
A distilled student has seen thousands of such lines; an undistilled one has not, which is the point.

The teacher's baseline (the same question asked as a chat prompt, and few-shot extraction) is
tasks/stages/teacher_baseline.py; it shares `aspect_items` and `polarity_metrics` from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from prefect import task
from tqdm.auto import tqdm

from fsa_distill.core.config import DataConfig, DistillConfig
from fsa_distill.core.digests import sha256_json
from fsa_distill.models.student.decoding import encode_sources
from fsa_distill.models.student.load import load_student
from fsa_distill.models.student.text import NL_TOKEN
from fsa_distill.models.student.training import pick_device
from fsa_distill.tasks.stages.keys import Placement, StageSettings
from fsa_distill.tasks.stages.records import ModelResult, StageResult
from fsa_distill.tasks.stages.stage_task import current_stage_key, model_heavy, stage_task_options


class ZeroShotSettings(StageSettings):
    """What zero-shot polarity ranking reads: the benchmark's test split and the decoding batch."""

    data: DataConfig
    eval_batch_size: int

    @classmethod
    def of(cls, config: DistillConfig) -> ZeroShotSettings:
        return cls(data=config.data, eval_batch_size=config.finetune.eval_batch_size)


class ZeroShotResult(StageResult):
    dataset: str  # task/dataset
    task: str
    split: str
    accuracy: float
    macro_f1: float
    n_aspects: int

LABELS = ("positive", "negative", "neutral")
DECODER_PREFIX = {
    "atsa": 'Opinion Target 1: "{aspect}"' + NL_TOKEN + "Sentiment:",
    "acsa": 'Aspect: "{aspect}"' + NL_TOKEN + "Sentiment:",
}


def aspect_items(sentences: Sequence[dict[str, Any]], task: str) -> list[dict[str, str]]:
    """One item per gold (aspect, polarity) pair of the protocol, conflict skipped: sentence, aspect, gold."""
    from fsa_distill.benchmark.targets import target_elements

    items = []
    for sentence in sentences:
        for aspect, polarity in target_elements(sentence, task):
            if polarity in LABELS:
                items.append({"sentence": sentence["sentence"], "aspect": aspect, "gold": polarity})
    return items


@torch.no_grad()
def label_log_probs(model, tokenizer, items: Sequence[dict[str, str]], task: str, batch_size: int = 32,
                    progress: bool = True) -> list[list[float]]:
    """For each item, the summed log-probability of each label (order of LABELS) after the decoder prefix."""
    device = next(model.parameters()).device
    model.eval()
    rows: list[tuple[int, str, list[int], int]] = []  # (item, source, decoder ids, label token count)
    for index, item in enumerate(items):
        prefix = DECODER_PREFIX[task].format(aspect=item["aspect"])
        prefix_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        for label in LABELS:
            full = tokenizer(f"{prefix} {label.capitalize()}", add_special_tokens=False)["input_ids"]
            rows.append((index, item["sentence"], full, len(full) - len(prefix_ids)))
    scores = [[0.0] * len(LABELS) for _ in items]
    start_id = model.config.decoder_start_token_id
    pad_id = tokenizer.pad_token_id
    for start in tqdm(range(0, len(rows), batch_size), desc="zero-shot", unit="batch", disable=not progress):
        chunk = rows[start:start + batch_size]
        encoded = encode_sources(tokenizer, [row[1] for row in chunk]).to(device)
        width = max(len(row[2]) for row in chunk)
        labels = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for r, row in enumerate(chunk):
            labels[r, :len(row[2])] = torch.tensor(row[2])
        decoder_input = torch.cat([torch.full((len(chunk), 1), start_id, dtype=torch.long), labels[:, :-1]], 1)
        logits = model(**encoded, decoder_input_ids=decoder_input.to(device)).logits.float()
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, labels.to(device).unsqueeze(-1)).squeeze(-1)
        for r, (item_index, _, ids, n_label) in enumerate(chunk):
            label_index = (start + r) % len(LABELS)
            scores[item_index][label_index] = float(log_probs[r, len(ids) - n_label:len(ids)].sum())
    return scores


def rank_polarities(model_dir: Path | str, items: Sequence[dict[str, str]], task: str = "atsa",
                    batch_size: int = 32) -> list[str]:
    """The most likely polarity (positive / negative / neutral) of each item's aspect under the student."""
    model, tokenizer = load_student(model_dir, device=pick_device())
    scores = label_log_probs(model, tokenizer, items, task, batch_size)
    return [LABELS[max(range(len(LABELS)), key=lambda k: row[k])] for row in scores]


def polarity_metrics(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the three labels (an unparsed answer counts as wrong), by scikit-learn."""
    from sklearn.metrics import accuracy_score, f1_score

    if not gold:
        return {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}
    return {"accuracy": float(accuracy_score(gold, predicted)),
            "macro_f1": float(f1_score(gold, predicted, labels=list(LABELS), average="macro", zero_division=0)),
            "n": len(gold)}


def zero_shot_eval(model_dir: Path | str, task: str, sentences: Sequence[dict[str, Any]],
                   batch_size: int = 32) -> dict[str, Any]:
    """Student zero-shot accuracy / macro-F1 over the benchmark aspects of `sentences` (conflict skipped)."""
    items = aspect_items(sentences, task)
    predicted = rank_polarities(model_dir, items, task, batch_size) if items else []
    result = polarity_metrics([item["gold"] for item in items], predicted)
    result["predictions"] = predicted
    return result


# ------------------------------------------------------------------------------- stage entry points

def evaluate_zero_shot(model_dir: Path | str, task: str, dataset: str, settings: ZeroShotSettings) -> dict[str, Any]:
    """Zero-shot stage: the (pretrained, not fine-tuned) student on the test split (DataConfig subsample)."""
    from fsa_distill.benchmark.data import load_sentences

    sentences = load_sentences(task, dataset, "test", settings.data.data_dir)[:settings.data.max_test_sentences]
    result = zero_shot_eval(model_dir, task, sentences, batch_size=settings.eval_batch_size)
    return {"task": task, "dataset": dataset, "split": "test", "accuracy": result["accuracy"],
            "macro_f1": result["macro_f1"], "n_aspects": result["n"]}


@task(**stage_task_options("zero-shot", timeout_hours=4))
def zeroshot_stage(model: ModelResult, dataset: str, settings: ZeroShotSettings, placement: Placement
                   ) -> ZeroShotResult:
    """Zero-shot polarity ranking with the distilled (not fine-tuned) student."""
    task_name, dataset_name = dataset.split("/")
    with model_heavy(placement):
        result = evaluate_zero_shot(model.model_dir, task_name, dataset_name, settings)
    return ZeroShotResult(**{**result, "dataset": dataset}, digest=sha256_json(result), key=current_stage_key())
