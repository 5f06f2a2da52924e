"""The teacher baseline's prompts are versioned templates, filled exactly as the former inline prompts were."""

from __future__ import annotations

import pytest

from fsa_distill.models.teacher.base import TeacherAnswer
from fsa_distill.models.teacher.prompts import available_prompts, load_prompt
from fsa_distill.tasks.stages.teacher_baseline import (
    extraction_prompt,
    few_shot_block,
    first_polarity,
    polarity_prompt,
    teacher_baseline,
)

FISH = {"sentence": "The fish was fresh.",
        "aspects": [{"target": "fish", "from": 4, "to": 8, "polarity": "positive", "category": "food quality"}]}


def test_the_four_baseline_templates_ship_as_version_1() -> None:
    names = {f"teacher_{kind}_{task}" for kind in ("polarity", "extraction") for task in ("atsa", "acsa")}
    assert {name: available_prompts()[name] for name in names} == {key: [1] for key in names}


@pytest.mark.parametrize(
    ("task", "review", "expected"),
    [
        # The strings the inline prompts of tasks/stages/zeroshot.py produced, so the baseline's scores carry
        # over.
        ("atsa", "A {b} c", ('Review: "A {b} c"\nWhat sentiment does the review express towards the aspect term '
                            '"b"?\nAnswer with exactly one word: positive, negative or neutral.')),
        ("acsa", "Slow {aspect}.", ('Review: "Slow {aspect}."\nWhat sentiment does the review express towards the '
                                   'aspect category "b"?\nAnswer with exactly one word: positive, negative or '
                                   'neutral.')),
    ],
)
def test_polarity_prompt_is_the_former_inline_prompt(task: str, review: str, expected: str) -> None:
    assert polarity_prompt(task).render(review, fields={"aspect": "b"}) == expected


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("atsa", ("Extract every aspect terms mentioned in a review sentence together with its sentiment (positive, "
                 "negative, neutral or conflict).\nAnswer on one line in the format: term | sentiment ; term | "
                 "sentiment\nAspect terms must be copied exactly as they appear in the sentence.\n\nSentence: The "
                 "fish was fresh.\nAnswer: fish | positive\n\nSentence: A {review} {examples} c\nAnswer:")),
        ("acsa", ("Extract every aspect categorys mentioned in a review sentence together with its sentiment "
                 "(positive, negative, neutral or conflict).\nAnswer on one line in the format: category | "
                 "sentiment ; category | sentiment\nCategories are written in lower case as 'entity attribute', "
                 "e.g. food quality, service general.\n\nSentence: The fish was fresh.\nAnswer: food quality | "
                 "positive\n\nSentence: A {review} {examples} c\nAnswer:")),
    ],
)
def test_extraction_prompt_is_the_former_inline_prompt(task: str, expected: str) -> None:
    """Braces in the review (even `{review}` and `{examples}`) stay as written: fields are filled in one pass."""
    rendered = extraction_prompt(task).render("A {review} {examples} c",
                                              fields={"examples": few_shot_block(task, [FISH])})
    assert rendered == expected


def test_first_polarity() -> None:
    assert [first_polarity(text) for text in ("Positive.", "It is NEUTRAL", "negatively", "")] == [
        "positive", "neutral", "unparsed", "unparsed"]


class _RecordingTeacher:
    model_id = "recording"

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, requests):
        self.prompts += [request.messages[0]["content"] for request in requests]
        return [TeacherAnswer("positive", 1, "stop") for _ in requests]


def test_baseline_asks_with_the_templates_and_reports_their_versions() -> None:
    teacher = _RecordingTeacher()
    result = teacher_baseline(teacher, "atsa", [FISH], [FISH], views=["normal"])
    polarity, extraction = load_prompt("teacher_polarity_atsa"), load_prompt("teacher_extraction_atsa")
    assert result["prompts"] == [polarity.key, extraction.key]
    assert teacher.prompts == [polarity.render(FISH["sentence"], fields={"aspect": "fish"}),
                               extraction.render(FISH["sentence"], fields={"examples": few_shot_block("atsa", [FISH])})]
    assert result["zero_shot"]["accuracy"] == 1.0


def test_the_templates_are_part_of_the_teacher_baseline_stage_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage's code digest follows its imports to models/teacher/prompts.py and the templates beside it."""
    from fsa_distill.tasks.stages import keys as caching
    from fsa_distill.tasks.stages import teacher_baseline

    hashed: list[str] = []
    real_sha256_file = caching.sha256_file
    monkeypatch.setattr(caching, "sha256_file", lambda path: hashed.append(path.name) or real_sha256_file(path))
    caching._parsed.cache_clear()
    caching.code_digest(teacher_baseline.__name__)
    assert {f"teacher_{kind}_{task}.v1.txt" for kind in ("polarity", "extraction") for task in ("atsa", "acsa")} \
        <= set(hashed)


def test_polarity_metrics_count_an_unparsed_answer_as_wrong() -> None:
    from fsa_distill.tasks.stages.zeroshot import polarity_metrics

    gold = ["positive", "positive", "negative", "neutral"]
    predicted = ["positive", "negative", "negative", "unparsed"]
    metrics = polarity_metrics(gold, predicted)
    # F1 per label: positive 2/3 (P 1, R 1/2), negative 2/3 (P 1/2, R 1), neutral 0 (never predicted)
    assert metrics["accuracy"] == pytest.approx(0.5) and metrics["n"] == 4
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert polarity_metrics([], []) == {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}
