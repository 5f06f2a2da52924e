"""The study's statistics: tallies reproduce the scorer, and the paired bootstrap behaves as it must."""

from __future__ import annotations

import numpy as np
import pytest

from fsa_distill.benchmark.scorer import score_predictions
from fsa_distill.benchmark.stats import micro_f1, paired_difference, sentence_tallies

SENTENCES = [
    {"sentence": "The pizza was great but the service was slow.",
     "aspects": [{"from": "4", "to": "9", "target": "pizza", "polarity": "positive"},
                 {"from": "28", "to": "35", "target": "service", "polarity": "negative"}]},
    {"sentence": "Nice wine list.", "aspects": [{"from": "5", "to": "14", "target": "wine list",
                                                 "polarity": "positive"}]},
    {"sentence": "We went on a Monday.", "aspects": []},
]


@pytest.mark.parametrize("predictions", [
    ["pizza | positive ; service | neutral", "wine | positive", ""],
    ["", "", ""],
    ["pizza | positive ; service | negative", "wine list | positive", "Monday | neutral"],
])
def test_tallies_give_the_scorers_f1(predictions: list[str]) -> None:
    tallies = sentence_tallies("atsa", SENTENCES, predictions)
    assert micro_f1(tallies.sum(0)) == pytest.approx(score_predictions("atsa", SENTENCES, predictions)["f1"])


def _runs(rng: np.random.Generator, hit_rate: float, n: int = 400) -> dict[int, np.ndarray]:
    """Synthetic tallies: one gold and one predicted pair per sentence, right with probability `hit_rate`."""
    runs = {}
    for seed in (42, 52, 62):
        hits = rng.random(n) < hit_rate
        runs[seed] = np.stack([np.ones(n), hits, np.ones(n), hits], axis=1).astype(np.int64)
    return runs


def test_bootstrap_interval_covers_a_real_difference_and_is_centred_on_no_difference() -> None:
    rng = np.random.default_rng(1)
    base = {"d1": _runs(rng, 0.3), "d2": _runs(rng, 0.3)}
    better = {"d1": _runs(rng, 0.5), "d2": _runs(rng, 0.5)}
    result = paired_difference(better, base, samples=500)
    assert 15 < result["mean"] < 25 and 0 < result["ci95"][0] < result["mean"] < result["ci95"][1]
    same = paired_difference(base, base, samples=500)
    assert same["mean"] == 0 and same["ci95"] == [0.0, 0.0]


def test_prediction_profile_shows_a_student_that_writes_one_answer_for_everything() -> None:
    from fsa_distill.tasks.study.results import prediction_profile

    profile = prediction_profile(["food | positive"] * 3 + ["", "service | negative"])
    assert profile == {"distinct": 3, "top": "food | positive", "top_share": 0.6, "empty_share": 0.2}
