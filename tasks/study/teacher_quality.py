"""How good is the teacher? Its analyses of reviews that have gold labels, scored like a student's predictions.

Wherever the teacher analysed benchmark train sentences (the `analysis` prompt on reviews with gold aspects),
its `Opinion Target N:` / `Sentiment:` blocks become (term, polarity) pairs — "strongly positive" counts as
positive, "mixed" as conflict — and the project's scorer scores them against the gold (term, polarity) pairs
with the ATSA protocol (terms must occur verbatim in the sentence; ACSA datasets are scored on their gold terms
too). Alongside: how many answers validation accepted and why the others were rejected. A user sees this right
after the generate stage, before paying for pretraining.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from fsa_distill.benchmark.scorer import score_pairs, score_predictions
from fsa_distill.benchmark.targets import PAIR_SEPARATOR, PIECE_SEPARATOR, Pair, gold_pairs
from fsa_distill.core.config import DistillConfig
from fsa_distill.tasks.stages.validation import parse_opinion_targets

_BLOCK = re.compile(r"^\W*Opinion Target\s*\d*\W*:", re.IGNORECASE | re.MULTILINE)
_SENTIMENT = re.compile(r"^\W*Sentiment\W*:(.*)$", re.IGNORECASE | re.MULTILINE)
# The words a teacher uses for each benchmark polarity; the first one in the Sentiment line decides.
_POLARITY_WORDS = {"positive": "positive", "negative": "negative", "neutral": "neutral", "mixed": "conflict",
                   "conflict": "conflict", "conflicting": "conflict"}
_POLARITY = re.compile(r"\b(" + "|".join(_POLARITY_WORDS) + r")\b", re.IGNORECASE)


def sentiment_polarity(sentiment: str) -> str | None:
    """`strongly positive` → positive, `Mixed (mostly negative)` → conflict; None when no polarity word."""
    found = _POLARITY.search(sentiment)
    return _POLARITY_WORDS[found.group(1).lower()] if found else None


def analysis_pairs(response: str) -> list[Pair]:
    """(target, polarity) of every `Opinion Target` block that has a target and a recognisable sentiment."""
    starts = [match.start() for match in _BLOCK.finditer(response)]
    pairs = []
    for start, end in zip(starts, starts[1:] + [len(response)]):  # no blocks: no pairs
        block = response[start:end]
        targets, sentiment = parse_opinion_targets(block), _SENTIMENT.search(block)
        polarity = sentiment_polarity(sentiment.group(1)) if sentiment else None
        if targets and polarity:
            pairs.append((targets[0], polarity))
    return pairs


def as_prediction(pairs: list[Pair]) -> str:
    """Pairs written the way a fine-tuned student writes them, so the scorer reads both alike."""
    return PIECE_SEPARATOR.join(f"{term}{PAIR_SEPARATOR}{polarity}" for term, polarity in pairs)


def score_analyses(sentences: list[dict[str, Any]], responses: list[str]) -> dict[str, float | int]:
    """The teacher's analyses (one per gold sentence) scored as ATSA predictions; `target_f1` ignores polarity."""
    predictions = [as_prediction(analysis_pairs(response)) for response in responses]
    pairs = score_predictions("atsa", sentences, predictions)
    gold_terms = [[(term, "") for term, _ in gold_pairs(s, "atsa")] for s in sentences]
    predicted_terms = [[(term, "") for term, _ in analysis_pairs(r) if term in s["sentence"]]
                       for s, r in zip(sentences, responses, strict=True)]
    targets = score_pairs(gold_terms, predicted_terms)
    return {"pair_precision": pairs["precision"], "pair_recall": pairs["recall"], "pair_f1": pairs["f1"],
            "target_f1": targets["f1"], "n_sentences": pairs["n_sentences"], "n_gold": pairs["n_gold"],
            "n_pred": pairs["n_pred"]}


def final_answers(generation_dir: Path) -> list[dict[str, Any]]:
    """One row per (review, prompt): the accepted answer, else the last rejected attempt (what the store keeps)."""
    from datasets import load_from_disk

    final: dict[tuple[str, str], dict[str, Any]] = {}
    for row in load_from_disk(str(Path(generation_dir) / "rejected")):  # attempts in order: the last one wins
        final[(row["review"], row["prompt"])] = row
    for row in load_from_disk(str(generation_dir)):
        final[(row["review"], row["prompt"])] = row
    return list(final.values())


def teacher_quality(generation_dirs: list[Path], gold_sentences: list[dict[str, Any]]) -> dict[str, Any]:
    """Acceptance, rejection reasons and the gold-scored analyses of one teacher's answers."""
    answers = [row for folder in generation_dirs for row in final_answers(Path(folder))]
    accepted = sum(bool(row["valid"]) for row in answers)
    reasons = Counter(row["reject_reason"] for row in answers if not row["valid"])
    gold_by_text = {sentence["sentence"].strip(): sentence for sentence in gold_sentences}
    analysed = [(gold_by_text[row["review"].strip()], row["response"]) for row in answers
                if row["prompt"] == "analysis" and row["review"].strip() in gold_by_text]
    quality: dict[str, Any] = {
        "answers": len(answers),
        "accepted": accepted,
        "acceptance_rate": accepted / len(answers) if answers else 0.0,
        "rejected_by_reason": dict(sorted(reasons.items())),
        "gold_analyses": len(analysed),
    }
    if analysed:
        quality.update(score_analyses([s for s, _ in analysed], [r for _, r in analysed]))
    return quality


def gold_train_sentences(config: DistillConfig) -> list[dict[str, Any]]:
    """Every train sentence of the configured datasets: the reviews whose analyses can be scored."""
    from fsa_distill.benchmark.data import load_sentences

    sentences = []
    for name in config.data.datasets:
        task, dataset = name.split("/")
        sentences += load_sentences(task, dataset, "train", config.data.data_dir)
    return sentences


def numeric_figures(quality: dict[str, Any], prefix: str = "teacher_quality/") -> dict[str, float]:
    """The figures MLflow takes as metrics (rejection reasons flattened to `<prefix>rejected_<reason>`)."""
    figures = {f"{prefix}{key}": float(value) for key, value in quality.items()
               if isinstance(value, int | float) and not isinstance(value, bool)}
    figures.update({f"{prefix}rejected_{reason}": float(count)
                    for reason, count in quality.get("rejected_by_reason", {}).items()})
    return figures
