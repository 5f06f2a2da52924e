"""The teacher-quality report on a tiny example whose score is worked out by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset

from fsa_distill.tasks.study.teacher_quality import (
    analysis_pairs,
    score_analyses,
    sentiment_polarity,
    teacher_quality,
)

SENTENCES = [
    {"ID": "1", "sentence": "The pizza was great but the service was slow.",
     "aspects": [{"from": "4", "to": "9", "target": "pizza", "category": None, "polarity": "positive"},
                 {"from": "28", "to": "35", "target": "service", "category": None, "polarity": "negative"}]},
    {"ID": "2", "sentence": "Nice wine list.",
     "aspects": [{"from": "5", "to": "14", "target": "wine list", "category": None, "polarity": "positive"}]},
]
ANALYSES = [
    # pizza right ("strongly positive" counts as positive); service found but with the wrong polarity
    ('Opinion Target 1: "pizza"\nAspect: "taste"\nSentiment: strongly positive\nReasoning: great.\n\n'
     'Opinion Target 2: "service"\nAspect: "speed"\nSentiment: Neutral\nReasoning: slow.'),
    # a target that is not in the sentence (dropped by the protocol) and no wine list: recall 0 here
    'Opinion Target 1: "drinks"\nAspect: "choice"\nSentiment: mildly positive\nReasoning: nice.',
]


def test_sentiment_words_map_to_benchmark_polarities() -> None:
    assert sentiment_polarity(" strongly positive") == "positive"
    assert sentiment_polarity("Mildly Negative") == "negative"
    assert sentiment_polarity("mixed (mostly positive)") == "conflict"
    assert sentiment_polarity("unclear") is None
    assert analysis_pairs(ANALYSES[0]) == [("pizza", "positive"), ("service", "neutral")]
    assert analysis_pairs("The reviewer liked it.") == []  # an answer without blocks has no pairs


def test_score_of_a_tiny_example_matches_the_hand_count() -> None:
    scores = score_analyses(SENTENCES, ANALYSES)
    # predicted (valid) pairs: pizza|positive (right), service|neutral (wrong) -> precision 1/2
    # gold pairs: pizza|positive (found), service|negative, wine list|positive -> recall 1/3
    assert scores["pair_precision"] == pytest.approx(1 / 2)
    assert scores["pair_recall"] == pytest.approx(1 / 3)
    assert scores["pair_f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))  # 0.4
    # ignoring polarity: pizza and service both found (precision 2/2, recall 2/3) -> F1 0.8
    assert scores["target_f1"] == pytest.approx(0.8)


def test_report_counts_acceptance_and_reasons_and_scores_only_gold_analyses(tmp_path: Path) -> None:
    def rows(items):
        names = ("review", "prompt", "response", "valid", "reject_reason")
        return {name: [item[i] for item in items] for i, name in enumerate(names)}

    accepted = [(SENTENCES[0]["sentence"], "analysis", ANALYSES[0], True, ""),
                (SENTENCES[0]["sentence"], "rewrite", "I loved the pizza.", True, ""),
                ("A review without gold labels.", "analysis", ANALYSES[0], True, "")]
    rejected = [(SENTENCES[1]["sentence"], "analysis", "garbage", False, "no_opinion_targets"),  # re-asked
                (SENTENCES[1]["sentence"], "analysis", ANALYSES[1], False, "target_not_in_review")]
    Dataset.from_dict(rows(accepted)).save_to_disk(str(tmp_path / "gen"))
    Dataset.from_dict(rows(rejected)).save_to_disk(str(tmp_path / "gen" / "rejected"))
    quality = teacher_quality([tmp_path / "gen"], SENTENCES)
    assert (quality["answers"], quality["accepted"]) == (4, 3)
    assert quality["acceptance_rate"] == pytest.approx(0.75)
    assert quality["rejected_by_reason"] == {"target_not_in_review": 1}  # the final attempt's reason
    assert quality["gold_analyses"] == 2
    assert quality["pair_f1"] == pytest.approx(0.4)


def test_demo_table_line_names_the_teacher_and_says_what_the_numbers_mean() -> None:
    from fsa_distill.cli.commands.run import teacher_quality_lines

    quality = {"answers": 10, "accepted": 8, "acceptance_rate": 0.8, "gold_analyses": 2, "pair_precision": 0.5,
               "pair_recall": 1 / 3, "pair_f1": 0.4, "target_f1": 0.8, "rejected_by_reason": {"truncated": 2}}
    line, meaning = teacher_quality_lines({"mixtral-8x7b-instruct-v0.1": quality})
    assert "mixtral-8x7b-instruct-v0.1" in line and "8/10 (80%)" in line and "50.0 / 33.3 / 40.0" in line
    assert "truncated 2" in line and "scores the teacher's own analyses" in meaning
    assert teacher_quality_lines({}) == []
