"""Validation of teacher answers on crafted responses (and a sanity check on real Mixtral answers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsa_distill.models.teacher.base import TeacherAnswer
from fsa_distill.tasks.stages import validation as v

REVIEW = "The pasta was great but the waiter was rude, and the dessert menu is far too short."
ANALYSIS = (
    'Opinion Target 1: "pasta"\nAspect: "taste"\nSentiment: Strongly positive\n'
    "Reasoning: The reviewer calls the pasta great.\n\n"
    'Opinion Target 2: "waiter"\nAspect: "service"\nSentiment: Negative\n'
    "Reasoning: The waiter is described as rude.\n\n"
    'Opinion Target 3: "Dessert Menu"\nAspect: "variety"\nSentiment: Mildly negative\n'
    "Reasoning: The menu is too short for the reviewer."
)
REWRITE = ("I really enjoyed the pasta, which was great, but I was upset that the waiter was rude to me, "
           "and I was disappointed that the dessert menu is far too short.")


def check(text: str, prompt: str = "rewrite", finish: str = "stop", review: str = REVIEW) -> str | None:
    return v.validate_response(review, prompt, TeacherAnswer(text, len(text.split()), finish))


def test_good_answers_pass() -> None:
    assert check(ANALYSIS, "analysis") is None
    assert check(REWRITE) is None


@pytest.mark.parametrize("text", ["", "   \n ", "ok."])
def test_empty_answers_are_rejected(text: str) -> None:
    assert check(text) == v.EMPTY


def test_truncated_answers_are_rejected() -> None:
    assert check(REWRITE, finish="length") == v.TRUNCATED


def test_backend_errors_are_rejected() -> None:
    assert check("", finish="error") == v.BACKEND_ERROR


def test_degenerate_repetition_is_rejected() -> None:
    looping = "I liked the pasta and the pasta was good. " * 12
    assert check(looping) == v.REPETITION
    assert check("Sentiment: Positive\n" * 8 + "done") == v.REPETITION
    assert v.repeated_ngram_ratio(REWRITE) < 0.1


def test_wrong_language_is_rejected() -> None:
    assert check("我非常喜欢这里的意大利面，但是服务员很粗鲁，甜点菜单也太短了。我不会再来了。") == v.LANGUAGE
    french = ("J'ai adoré les pâtes, mais le serveur était impoli et la carte des desserts est beaucoup "
              "trop courte pour moi.")
    assert check(french) == v.LANGUAGE
    # a review that is not English itself is judged against itself, not against English
    assert check(french, review="Les pâtes étaient super mais le serveur était impoli.") is None


def test_opinion_targets_are_parsed() -> None:
    text = ('**Opinion Target 1:** "battery life"\nAspect: x\n\nOpinion Target 2: screen\n'
            "Opinion target 3: “keyboard”\n")
    assert v.parse_opinion_targets(text) == ["battery life", "screen", "keyboard"]
    # an apostrophe inside a single-quoted target is not its closing quote
    apostrophes = ("Opinion Target 1: 'Joe's pizza'\nOpinion Target 2: ‘chef’s special’ (food)\n"
                   'Opinion Target 3: "Joe\'s" and more\nOpinion Target 4: \'fries\'')
    assert v.parse_opinion_targets(apostrophes) == ["Joe's pizza", "chef’s special", "Joe's", "fries"]


def test_invented_targets_are_rejected() -> None:
    invented = ANALYSIS.replace('"waiter"', '"wireless adapter"')
    assert v.targets_missing_from_review(REVIEW, invented) == ["wireless adapter"]
    assert check(invented, "analysis") == v.TARGET_NOT_IN_REVIEW
    # case, punctuation and spacing do not matter; the rewrite prompt is not checked for targets
    assert v.targets_missing_from_review("The Dessert-menu rocks", 'Opinion Target 1: "dessert menu"') == []
    assert check(invented) is None


def test_analysis_without_targets_is_rejected() -> None:
    assert check("The review is positive about the pasta and negative about the waiter.", "analysis") == (
        v.NO_TARGETS
    )


def test_most_real_mixtral_answers_pass(shared_dir: Path) -> None:
    path = shared_dir / "teacher_outputs" / "mixtral_500.jsonl"
    if not path.exists():
        pytest.skip("no real teacher outputs")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    verdicts = []
    for row in rows:
        prompt = "analysis" if "Opinion Target" in row["mixtral_response"] else "rewrite"
        verdicts.append((prompt, check(row["mixtral_response"], prompt, review=row["Text"])))
    rewrites = [reason for prompt, reason in verdicts if prompt == "rewrite"]
    analyses = [reason for prompt, reason in verdicts if prompt == "analysis"]
    assert rewrites.count(None) / len(rewrites) > 0.95  # real rewrites are clean
    assert analyses.count(None) / len(analyses) > 0.5  # a third of Mixtral's targets are invented/implicit
