"""Scorer throughput: score 1,000,000 predicted ATSA pieces end to end (parse + match against ~1M gold pairs),
against the paper's list-membership scorer, timed in the same run on a subset and extrapolated (it is O(n²)).
About 13% of the generated pieces are invalid or name absent terms, so ~870k pairs survive the protocol's filters.

    python -m fsa_distill.perf.bench_scorer [n_pairs]      or      fsa-distill bench scorer --json
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fsa_distill.benchmark.scorer import score_predictions
from fsa_distill.benchmark.targets import POLARITIES, gold_pairs, parse_prediction
from fsa_distill.core.files import write_json_atomically
from fsa_distill.perf import RESULTS_DIR

RESULTS_PATH = RESULTS_DIR / "scorer.json"
WORDS = [f"w{i}" for i in range(2000)]
TERMS = [f"term{i}" for i in range(500)] + [f"multi word term{i}" for i in range(100)]


def synthetic_benchmark(n_pairs: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[str]]:
    """ATSA sentences and raw predictions holding about `n_pairs` predicted pieces, with realistic noise:
    wrong polarities, misses, extra pairs, terms absent from the sentence, malformed pieces, repeated terms."""
    rng = random.Random(seed)
    sentences: list[dict[str, Any]] = []
    predictions: list[str] = []
    produced = 0
    while produced < n_pairs:
        terms = rng.sample(TERMS, rng.randint(0, 5))
        if terms and rng.random() < 0.1:
            terms.append(terms[0])  # the same term twice: two gold pairs
        text, aspects = "", []
        for term in terms:
            text += " ".join(rng.choices(WORDS, k=rng.randint(1, 4))) + " "
            aspects.append({"from": str(len(text)), "to": str(len(text) + len(term)), "target": term,
                            "category": None, "polarity": rng.choice(POLARITIES)})
            text += term + " "
        text += " ".join(rng.choices(WORDS, k=3))
        pieces = []
        for aspect in aspects:
            roll = rng.random()
            if roll < 0.7:
                pieces.append(f"{aspect['target']} | {aspect['polarity']}")
            elif roll < 0.85:
                pieces.append(f"{aspect['target']} | {rng.choice(POLARITIES)}")
            elif roll < 0.9:
                pieces.append(f"{aspect['target']} positive")  # malformed: no '|'
        if rng.random() < 0.2:
            pieces.append(f"{rng.choice(TERMS)} | {rng.choice(POLARITIES)}")  # usually absent from the sentence
        sentences.append({"ID": str(len(sentences)), "sentence": text, "aspects": aspects})
        predictions.append(" ; ".join(pieces))
        produced += len(pieces)
    return sentences, predictions


def naive_score(task: str, sentences: list[dict[str, Any]], predictions: list[str]) -> dict[str, float]:
    """The paper's scorer: (sentence index, pair) tuples in two global lists, matched by list membership."""
    gold_list = [(i, pair) for i, sentence in enumerate(sentences) for pair in gold_pairs(sentence, task)]
    pred_list = [(i, pair) for i, (sentence, output) in enumerate(zip(sentences, predictions))
                 for pair in parse_prediction(output, task, sentence["sentence"])]
    precision = sum(pred in gold_list for pred in pred_list) / len(pred_list) if pred_list else 1
    recall = sum(gold in pred_list for gold in gold_list) / len(gold_list) if gold_list else 1
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0
    return {"precision": precision, "recall": recall, "f1": f1}


def _timed(function, *args) -> tuple[Any, float]:
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def run(n_pairs: int = 1_000_000, naive_pairs: int = 5_000, out_path: Path | None = RESULTS_PATH,
        seed: int = 0) -> dict[str, Any]:
    """Time the scorer on `n_pairs` predicted pairs and the naive scorer on `naive_pairs`; write JSON to out_path."""
    sentences, predictions = synthetic_benchmark(n_pairs, seed)
    scores, seconds = _timed(score_predictions, "atsa", sentences, predictions)

    subset_end, pieces = 0, 0
    while subset_end < len(predictions) and pieces < naive_pairs:
        pieces += predictions[subset_end].count(";") + 1 if predictions[subset_end] else 0
        subset_end += 1
    subset = (sentences[:subset_end], predictions[:subset_end])
    naive, naive_seconds = _timed(naive_score, "atsa", *subset)
    fast_subset, fast_subset_seconds = _timed(score_predictions, "atsa", *subset)
    same = all(abs(naive[key] - fast_subset[key]) < 1e-12 for key in ("precision", "recall", "f1"))
    scale = scores["n_pred"] / max(fast_subset["n_pred"], 1)
    naive_extrapolated = naive_seconds * scale**2  # list membership over the whole set: quadratic

    result = {
        "benchmark": "scorer",
        "task": "atsa",
        "n_pairs_requested": n_pairs,
        "n_sentences": scores["n_sentences"],
        "n_pred_pairs": scores["n_pred"],
        "n_gold_pairs": scores["n_gold"],
        "seconds": round(seconds, 3),
        "pairs_per_second": round(scores["n_pred"] / seconds) if seconds else None,
        "f1": scores["f1"],
        "goal_seconds": 10.0,
        "within_goal": seconds < 10.0 if n_pairs >= 1_000_000 else None,
        "baseline": {
            "name": "paper's scorer: global list membership (O(n^2))",
            "n_pred_pairs": fast_subset["n_pred"],
            "naive_seconds": round(naive_seconds, 4),
            "fast_seconds_same_subset": round(fast_subset_seconds, 4),
            "same_scores_on_subset": same,
            "naive_seconds_extrapolated_to_full": round(naive_extrapolated, 1),
        },
        "speedup_vs_naive_extrapolated": round(naive_extrapolated / seconds, 1) if seconds else None,
        "speedup_vs_naive_same_subset": round(naive_seconds / fast_subset_seconds, 1) if fast_subset_seconds else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if out_path is not None:
        write_json_atomically(Path(out_path), result)
    return result


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)))
