"""What the student gets wrong: every gold and predicted pair of a test sentence marked by kind, error counts, a
polarity confusion matrix, a fixed sample of sentences, and sample teacher answers (accepted and rejected).

The sample is drawn with the same seed every run from the test set's sentence indices, so two runs on the same
test set show the same sentences and can be read side by side.

Kinds of pair (the scorer's rules, benchmark/targets.py):
- right: the predicted (element, polarity) is a gold pair;
- wrong polarity: the element is a gold element, the polarity is not its gold one;
- missed: a gold pair the prediction has neither right nor with a wrong polarity;
- not a gold aspect: a well-formed predicted pair whose element occurs in the sentence but is not gold;
- not in the sentence: an ATSA term that does not occur verbatim in the sentence (the scorer drops it).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fsa_distill.benchmark.targets import POLARITIES, gold_pairs, parse_prediction

SAMPLE_SEED = 20240  # fixed: every run shows the same test sentences
SAMPLE_SIZE = 12
TEACHER_SAMPLES = 4
KINDS = ("right", "missed", "wrong polarity", "not a gold aspect", "not in the sentence")
MISSED = "(missed)"


def mark_pairs(task: str, sentence: Mapping[str, Any], raw: str) -> list[dict[str, Any]]:
    """Every gold and predicted pair of one sentence with its kind: `{element, gold, predicted, kind}`."""
    scored = parse_prediction(raw, task, sentence["sentence"])
    # the same parser without the term check (ACSA rules) finds the pairs the scorer drops for their term
    unchecked = Counter(parse_prediction(raw, "acsa", sentence["sentence"])) if task == "atsa" else Counter()
    marks = [{"element": element, "gold": None, "predicted": polarity, "kind": "not in the sentence"}
             for (element, polarity), count in (unchecked - Counter(scored)).items() for _ in range(count)]
    open_gold = list(gold_pairs(sentence, task))
    unmatched = []
    for pair in scored:
        if pair in open_gold:
            open_gold.remove(pair)
            marks.append({"element": pair[0], "gold": pair[1], "predicted": pair[1], "kind": "right"})
        else:
            unmatched.append(pair)
    for element, polarity in unmatched:
        same = next((gold for gold in open_gold if gold[0] == element), None)
        if same is not None:
            open_gold.remove(same)
            marks.append({"element": element, "gold": same[1], "predicted": polarity, "kind": "wrong polarity"})
        else:
            marks.append({"element": element, "gold": None, "predicted": polarity, "kind": "not a gold aspect"})
    marks.extend({"element": element, "gold": polarity, "predicted": None, "kind": "missed"}
                 for element, polarity in open_gold)
    return marks


def analyse_errors(task: str, sentences: Sequence[Mapping[str, Any]], predictions: Sequence[str],
                   sample_size: int = SAMPLE_SIZE) -> dict[str, Any]:
    """Counts by kind and the polarity confusion matrix over the whole test set, and a fixed-seed sample."""
    counts: Counter[str] = Counter()
    confusion: dict[str, Counter[str]] = {gold: Counter() for gold in POLARITIES}
    marked = []
    for sentence, raw in zip(sentences, predictions, strict=True):
        marks = mark_pairs(task, sentence, raw)
        marked.append(marks)
        counts.update(mark["kind"] for mark in marks)
        for mark in marks:
            if mark["gold"] is not None:
                confusion.setdefault(mark["gold"], Counter())[mark["predicted"] or MISSED] += 1
    picks = sorted(random.Random(SAMPLE_SEED).sample(range(len(sentences)), min(sample_size, len(sentences))))
    sample = [{"index": i, "sentence": sentences[i]["sentence"], "prediction": predictions[i], "pairs": marked[i]}
              for i in picks]
    return {"counts": {kind: counts.get(kind, 0) for kind in KINDS},
            "confusion": {gold: dict(row) for gold, row in confusion.items()}, "sample": sample}


def teacher_samples(dataset_dir: Path, rejected_dir: Path, n: int = TEACHER_SAMPLES) -> dict[str, list[dict]]:
    """A few accepted and a few rejected teacher answers (with the reason), the same rows for the same corpus."""
    import datasets

    samples: dict[str, list[dict]] = {}
    for name, folder in (("accepted", dataset_dir), ("rejected", rejected_dir)):
        try:
            rows = datasets.load_from_disk(str(folder))
        except (FileNotFoundError, ValueError):
            samples[name] = []
            continue
        picks = sorted(random.Random(SAMPLE_SEED).sample(range(len(rows)), min(n, len(rows))))
        samples[name] = [{key: rows[i].get(key, "") for key in ("review", "prompt", "response", "reject_reason")}
                         for i in picks]
    return samples


def run_errors(runs: Sequence[Mapping[str, Any]],
               test_sets: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Per dataset, the error analysis of the run with the lowest seed (the same seed every run)."""
    from fsa_distill.benchmark.scorer import read_prediction_file

    analyses = {}
    for run in sorted(runs, key=lambda run: (run["dataset"], run["seed"])):
        if run["dataset"] in analyses:
            continue
        predictions = read_prediction_file(Path(run["predictions_path"]))
        analysis = analyse_errors(run["dataset"].split("/")[0], test_sets[run["dataset"]], predictions)
        analyses[run["dataset"]] = {"seed": run["seed"], **analysis}
    return analyses
