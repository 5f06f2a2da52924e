"""The study's statistics: per-sentence tallies, mean ± std over seeds, and paired bootstrap intervals.

Why a hand-written bootstrap (numpy) rather than `scipy.stats.bootstrap`: the statistic is a micro-F1 recomputed
from resampled per-sentence tallies, paired twice (the same resampled test sentences for both arms, the same
resampled seeds), and averaged over datasets; that is a few lines of array code but an awkward fit for scipy's
one-statistic-per-sample interface.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fsa_distill.benchmark.targets import gold_pairs, parse_prediction

# columns of a tally: predicted pairs, predicted pairs found in gold, gold pairs, gold pairs found in predictions
N_PRED, CORRECT_PRED, N_GOLD, CORRECT_GOLD = range(4)
BOOTSTRAP_CHUNK = 1000

Tallies = np.ndarray  # (n_sentences, 4) int


def sentence_tallies(task: str, sentences: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> Tallies:
    """Per test sentence, the four counts the scorer sums (benchmark/scorer.py `_micro_scores`)."""
    rows = []
    for sentence, prediction in zip(sentences, predictions, strict=True):
        gold = gold_pairs(sentence, task)
        predicted = parse_prediction(prediction, task, sentence["sentence"])
        correct_pred = correct_gold = 0
        if gold and predicted:
            gold_set, pred_set = set(gold), set(predicted)
            correct_pred = sum(pair in gold_set for pair in predicted)
            correct_gold = sum(pair in pred_set for pair in gold)
        rows.append((len(predicted), correct_pred, len(gold), correct_gold))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def micro_f1(totals: np.ndarray) -> np.ndarray:
    """F1 from summed tallies (last axis = the 4 counts), with the scorer's conventions: precision 1 when
    nothing is predicted, recall 1 when there is no gold, F1 0 when both are 0."""
    totals = np.asarray(totals, dtype=float)
    n_pred, n_gold = totals[..., N_PRED], totals[..., N_GOLD]
    precision = np.divide(totals[..., CORRECT_PRED], n_pred, out=np.ones_like(n_pred), where=n_pred > 0)
    recall = np.divide(totals[..., CORRECT_GOLD], n_gold, out=np.ones_like(n_gold), where=n_gold > 0)
    denominator = precision + recall
    return np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def mean_std(values: Sequence[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def paired_difference(arm: Mapping[str, Mapping[int, Tallies]], base: Mapping[str, Mapping[int, Tallies]],
                      samples: int, seed: int = 0) -> dict[str, Any]:
    """Mean over datasets of the seed-averaged F1 difference arm − base (× 100), with a 95% bootstrap interval.

    `arm[dataset][seed]` holds the test tallies of one fine-tuned run. Each bootstrap replicate resamples, per
    dataset, the test sentences (the same ones for both arms) and the seeds (the same seeds for both arms:
    a seed fixes the fine-tuning data order), so the interval covers both test-set and seed variation.
    """
    rng = np.random.default_rng(seed)
    replicates = np.zeros(samples)
    observed = []
    for dataset, arm_runs in arm.items():
        seeds = sorted(arm_runs)
        diffs = np.stack([micro_f1(arm_runs[s].sum(0)) - micro_f1(base[dataset][s].sum(0)) for s in seeds])
        observed.append(float(diffs.mean()))
        n = arm_runs[seeds[0]].shape[0]
        for start in range(0, samples, BOOTSTRAP_CHUNK):
            size = min(BOOTSTRAP_CHUNK, samples - start)
            weights = rng.multinomial(n, np.full(n, 1 / n), size=size)  # (size, n) resampled sentence counts
            per_seed = np.stack([micro_f1(weights @ arm_runs[s]) - micro_f1(weights @ base[dataset][s])
                                 for s in seeds])  # (seeds, size)
            picks = rng.integers(0, len(seeds), size=(size, len(seeds)))
            replicates[start:start + size] += per_seed[picks, np.arange(size)[:, None]].mean(axis=1)
    replicates /= len(arm)
    low, high = np.percentile(100 * replicates, [2.5, 97.5])
    return {"mean": 100 * statistics.fmean(observed), "ci95": [float(low), float(high)],
            "by_dataset": {dataset: 100 * value for dataset, value in zip(arm, observed, strict=True)},
            "bootstrap_samples": samples}
