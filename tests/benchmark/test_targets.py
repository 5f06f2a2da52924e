"""Target linearisation and prediction parsing, as ../shared/README.md defines them."""

from __future__ import annotations

import pytest

from fsa_distill.benchmark.data import load_sentences
from fsa_distill.benchmark.targets import (
    gold_pairs,
    linearise,
    normalise_category,
    parse_prediction,
    target_elements,
)

SENTENCE = "The food was great but the food at the bar and the service were slow."


def aspect(target, polarity, start=None, end=None, category=None):
    return {"from": start, "to": end, "target": target, "category": category, "polarity": polarity}


def test_atsa_orders_by_integer_offset_not_by_string():
    sentence = {"sentence": "0123456789 bread and rice", "aspects": [
        aspect("rice", "negative", "21", "25"), aspect("bread", "positive", "11", "16"), aspect("0", "neutral", 0, 1)]}
    assert linearise(sentence, "atsa") == "0 | neutral ; bread | positive ; rice | negative"


def test_atsa_removes_exact_duplicates_but_keeps_a_term_repeated_at_another_offset():
    sentence = {"sentence": SENTENCE, "aspects": [
        aspect("food", "positive", "4", "8", "FOOD#QUALITY"),
        aspect("food", "positive", 4, 8, "FOOD#PRICES"),  # same span, other category: one element
        aspect("food", "positive", "27", "31"),  # second occurrence: a second gold pair
        aspect("service", "negative", "51", "58"),
    ]}
    assert linearise(sentence, "atsa") == "food | positive ; food | positive ; service | negative"
    assert gold_pairs(sentence, "atsa") == [("food", "positive"), ("food", "positive"), ("service", "negative")]


@pytest.mark.parametrize("implicit", [None, "NULL", "null"])
def test_atsa_excludes_implicit_targets(implicit):
    sentence = {"sentence": "Great place.", "aspects": [aspect(implicit, "positive", "0", "0", "RESTAURANT#GENERAL"),
                                                       aspect("place", "positive", "6", "11")]}
    assert linearise(sentence, "atsa") == "place | positive"


def test_acsa_normalises_categories_and_keeps_first_seen_order():
    sentence = {"sentence": "x", "aspects": [
        aspect(None, "negative", category="SERVICE#GENERAL"), aspect("food", "positive", "0", "4", "FOOD#QUALITY"),
        aspect("NULL", "negative", category="SERVICE#GENERAL"), aspect(None, "conflict", category="FOOD#QUALITY")]}
    assert normalise_category("DRINKS#STYLE_OPTIONS") == "drinks style_options"
    assert linearise(sentence, "acsa") == (
        "service general | negative ; food quality | positive ; food quality | conflict")


def test_sentence_without_aspects_has_empty_target():
    assert linearise({"sentence": "Hi.", "aspects": []}, "atsa") == ""
    assert gold_pairs({"sentence": "Hi.", "aspects": []}, "acsa") == []


def test_parse_keeps_valid_pieces_with_multiplicity_and_strips_whitespace():
    text = "  food |positive;food | positive ;service|  conflict  "
    assert parse_prediction(text, "atsa", SENTENCE) == [
        ("food", "positive"), ("food", "positive"), ("service", "conflict")]


@pytest.mark.parametrize("piece", [
    "food positive",  # no '|'
    "food | positive | x",  # two '|'
    "food | good",  # not a polarity
    "food | Positive",  # labels are lower-case
    "pizza | positive",  # ATSA: not in the sentence
    "Food | positive",  # ATSA: verbatim means case-sensitive
    "",
])
def test_parse_drops_invalid_pieces(piece):
    assert parse_prediction(f"{piece} ; service | negative", "atsa", SENTENCE) == [("service", "negative")]


def test_acsa_parse_does_not_require_the_category_in_the_sentence():
    assert parse_prediction("food quality | positive ; x | y", "acsa", "Yum!") == [("food quality", "positive")]


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task"):
        target_elements({"sentence": "", "aspects": []}, "asqp")


@pytest.mark.parametrize("name", ["atsa/rest14", "atsa/laptop14", "acsa/rest16", "acsa/laptop16"])
def test_gold_pairs_on_real_data_match_the_protocol(benchmark_dir, name):
    """Gold multiplicity = distinct (term, polarity, span) for ATSA, distinct (category, polarity) for ACSA."""
    task, dataset = name.split("/")
    for sentence in load_sentences(task, dataset, "test", benchmark_dir):
        if task == "atsa":
            expected = {(a["target"], a["polarity"], int(a["from"]), int(a["to"]))
                        for a in sentence["aspects"] if a["target"] not in (None, "NULL")}
        else:
            expected = {(normalise_category(a["category"]), a["polarity"]) for a in sentence["aspects"]}
        assert len(gold_pairs(sentence, task)) == len(expected)
