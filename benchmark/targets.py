"""Target sequences and prediction parsing, exactly as the evaluation protocol in ../shared/README.md defines them.

A target sequence is `element | polarity ; element | polarity`, where the element is an aspect term (ATSA) or a
normalised aspect category (ACSA). The same parser reads gold sequences and model outputs, so a model that
copies the gold sequence scores F1 = 1.

How gold multiplicity works (our reading of the protocol, which matches the paper's released code):
- ATSA aspects are deduplicated on (term, polarity, from, to), not on (term, polarity). The same term annotated
  twice at the *same* offsets (the hard test set has such rows: one per category) is one element; a term that
  occurs twice in the sentence at *different* offsets with the same polarity stays two elements, so the target
  sequence repeats it ("food | positive ; food | positive") and it counts as two gold pairs.
- ACSA elements are deduplicated on (category, polarity), so each ACSA gold pair occurs once per sentence.
- `gold_pairs` is by definition `parse_prediction(linearise(...))`: the gold pairs are whatever survives the
  protocol's parser from the linearised target (the paper's scorer parses its target strings the same way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from operator import itemgetter
from typing import Any

# The parser lives in core so the served model (models/serving.py) reads outputs with the very same rules.
from fsa_distill.core.answers import (  # noqa: F401 - re-exported: the protocol's names live here
    PAIR_SEPARATOR,
    PIECE_SEPARATOR,
    POLARITIES,
    TASKS,
    Pair,
    check_task,
    parse_prediction,
)

IMPLICIT_TARGETS = (None, "NULL", "null", "")  # an aspect without a term in the sentence


def normalise_category(category: str) -> str:
    """ACSA element: `FOOD#QUALITY` → `food quality`."""
    return category.lower().replace("#", " ")


def _offset(value: str | int | None) -> int:
    """Offsets are strings in some files and ints in others; a missing one sorts first (as upstream)."""
    return 0 if value is None or value == "" else int(value)


def target_elements(sentence: Mapping[str, Any], task: str) -> list[Pair]:
    """The (element, polarity) pairs of the target sequence, in order, with the protocol's deduplication."""
    check_task(task)
    aspects: Iterable[Mapping[str, Any]] = sentence.get("aspects") or []
    if task == "acsa":
        pairs: list[Pair] = []
        seen: set[Pair] = set()
        for aspect in aspects:
            if not aspect.get("category"):
                continue
            pair = (normalise_category(aspect["category"]), aspect["polarity"])
            if pair not in seen:
                seen.add(pair)
                pairs.append(pair)
        return pairs
    located: dict[tuple[int, int, str, str], None] = {}  # a dict keeps first-seen order for offset ties
    for aspect in aspects:
        term = aspect.get("target")
        if term in IMPLICIT_TARGETS:
            continue
        key = (_offset(aspect.get("from")), _offset(aspect.get("to")), term, aspect["polarity"])
        located.setdefault(key, None)
    return [(term, polarity) for _, _, term, polarity in sorted(located, key=itemgetter(0, 1))]


def linearise(sentence: Mapping[str, Any], task: str) -> str:
    """The seq2seq training target, e.g. `bread | positive ; service | negative` (empty when no aspect)."""
    return PIECE_SEPARATOR.join(
        f"{element}{PAIR_SEPARATOR}{polarity}" for element, polarity in target_elements(sentence, task)
    )


def gold_pairs(sentence: Mapping[str, Any], task: str) -> list[Pair]:
    """Gold pairs with multiplicity: the linearised target read back through the protocol's parser."""
    return parse_prediction(linearise(sentence, task), task, sentence["sentence"])


# Marks the source of an auxiliary task's training sentence (finetune.auxiliary_datasets), so the student learns
# both target kinds from the same review text; the dataset's own sentences stay unmarked, so scoring and serving
# read plain reviews.
TASK_MARKERS = {"atsa": "aspect terms:", "acsa": "aspect categories:"}


def marked_source(sentence: str, task: str) -> str:
    """An auxiliary training source: `aspect categories: <sentence>` for ACSA, `aspect terms: ...` for ATSA."""
    return f"{TASK_MARKERS[task]} {sentence}"
