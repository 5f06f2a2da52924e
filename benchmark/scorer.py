"""Micro precision / recall / F1 of the paper's protocol (../shared/README.md), on the normal / implicit / multi
views, plus the prediction-file format (`{"prediction": "<raw output>"}` per gold sentence, in gold order).

The paper's scorer tests list membership over the whole test set (quadratic); here each sentence's pairs go
into a set once, so scoring is linear in the number of pairs and gives the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fsa_distill.benchmark.importers import jsonl_values
from fsa_distill.benchmark.targets import Pair, check_task, gold_pairs, parse_prediction
from fsa_distill.core.errors import InputError
from fsa_distill.core.paths import package_data

VIEWS = ("normal", "implicit", "multi")
METRIC_DIR = package_data("fsa_distill.benchmark", "fsa_f1")  # evaluate.load(str(METRIC_DIR), "atsa" | "acsa")


def is_implicit(sentence: Mapping[str, Any]) -> bool:
    """Any aspect whose opinion words are empty or missing (the sentiment is not stated by an opinion word)."""
    return any(not aspect.get("opinion_words") for aspect in sentence.get("aspects") or [])


def is_multi(sentence: Mapping[str, Any]) -> bool:
    """Aspects carrying more than one distinct polarity."""
    return len({aspect["polarity"] for aspect in sentence.get("aspects") or []}) > 1


def view_mask(sentences: Sequence[Mapping[str, Any]], view: str) -> list[bool]:
    """Which sentences belong to a view; views look at all aspects, implicit (NULL-target) ones included."""
    if view == "normal":
        return [True] * len(sentences)
    if view == "implicit":
        return [is_implicit(sentence) for sentence in sentences]
    if view == "multi":
        return [is_multi(sentence) for sentence in sentences]
    raise ValueError(f"unknown view {view!r}; choose from {list(VIEWS)}")


def _micro_scores(sentence_pairs: Iterable[tuple[Sequence[Pair], Sequence[Pair]]]) -> dict[str, float | int]:
    """Tally (gold, predicted) pair lists sentence by sentence. Consuming a generator keeps only one sentence's
    pairs alive at a time, which also spares the garbage collector from rescanning millions of tuples."""
    n_sentences = n_gold = n_pred = correct_pred = correct_gold = 0
    for gold_list, pred_list in sentence_pairs:
        n_sentences += 1
        n_gold += len(gold_list)
        n_pred += len(pred_list)
        if not gold_list or not pred_list:
            continue
        gold_set, pred_set = set(gold_list), set(pred_list)
        correct_pred += sum(pair in gold_set for pair in pred_list)
        correct_gold += sum(pair in pred_set for pair in gold_list)
    precision = correct_pred / n_pred if n_pred else 1.0
    recall = correct_gold / n_gold if n_gold else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "n_gold": n_gold, "n_pred": n_pred,
            "n_sentences": n_sentences}


def score_pairs(gold: Sequence[Sequence[Pair]], predicted: Sequence[Sequence[Pair]]) -> dict[str, float | int]:
    """Micro P/R/F1 over per-sentence pair lists (with multiplicity), in O(number of pairs).

    precision = predicted pairs found in the same sentence's gold / all predicted pairs (1 when none predicted);
    recall = gold pairs found in the same sentence's predictions / all gold pairs (1 when there is no gold).
    """
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predictions")
    return _micro_scores(zip(gold, predicted))


def score_predictions(
    task: str, sentences: Sequence[Mapping[str, Any]], predictions: Sequence[str], view: str = "normal"
) -> dict[str, float | int]:
    """Score raw outputs (one per benchmark sentence, same order) on a view of the benchmark sentences."""
    check_task(task)
    if len(sentences) != len(predictions):
        raise ValueError(f"{len(sentences)} gold sentences but {len(predictions)} predictions")
    mask = view_mask(sentences, view)
    return _micro_scores(
        (gold_pairs(sentence, task), parse_prediction(prediction, task, sentence["sentence"]))
        for sentence, prediction, keep in zip(sentences, predictions, mask)
        if keep
    )


def score_aspects_only(task: str, sentences: Sequence[Mapping[str, Any]], predictions: Sequence[str]
                       ) -> dict[str, float | int]:
    """The normal view with polarity ignored (an element is the term or category alone): how much of the F1 a
    student loses finding aspects, as against judging their sentiment. A diagnosis, not the protocol's score."""
    check_task(task)
    if len(sentences) != len(predictions):
        raise ValueError(f"{len(sentences)} gold sentences but {len(predictions)} predictions")
    return _micro_scores(
        ([aspect for aspect, _ in gold_pairs(sentence, task)],
         [aspect for aspect, _ in parse_prediction(prediction, task, sentence["sentence"])])
        for sentence, prediction in zip(sentences, predictions)
    )


def read_prediction_file(path: Path) -> list[str]:
    """Raw outputs of a prediction JSONL file; a broken line is an InputError naming the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").split("\n")  # not splitlines: U+2028 may sit in a string
    except FileNotFoundError:
        raise InputError(path, None, "prediction file not found") from None
    except UnicodeDecodeError as error:
        raise InputError(path, None, f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    predictions = []
    for number, record in jsonl_values(path, lines):
        if not isinstance(record, dict) or not isinstance(record.get("prediction"), str):
            raise InputError(path, f"line {number}", 'expected an object {"prediction": "<text>"}')
        predictions.append(record["prediction"])
    return predictions


def write_prediction_file(path: Path, predictions: Sequence[str]) -> Path:
    """Write predictions in the format `read_prediction_file` and `fsa-distill score` read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"prediction": text}, ensure_ascii=False) + "\n" for text in predictions)
    return path
