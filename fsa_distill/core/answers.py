"""Reading a target sequence (`element | polarity ; element | polarity`) into pairs: the evaluation protocol's
parser (../shared/README.md), in the bottom layer so the scorer (benchmark/) and the served model (models/)
share one implementation and a served answer holds exactly the pairs the scorer would count.
"""

from __future__ import annotations

from typing import Any

TASKS = ("atsa", "acsa")
POLARITIES = ("positive", "negative", "neutral", "conflict")
_POLARITY_SET = frozenset(POLARITIES)
ELEMENT_FIELD = {"atsa": "aspect", "acsa": "category"}  # the key of a pair's element in structured answers

PIECE_SEPARATOR = " ; "
PAIR_SEPARATOR = " | "

Pair = tuple[str, str]


def check_task(task: str) -> str:
    """Fail early and clearly on a task name typo: every function here branches on it."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {list(TASKS)}")
    return task


def parse_prediction(text: str, task: str, sentence: str) -> list[Pair]:
    """Pairs of a raw output, with multiplicity; pieces that break the protocol's rules are dropped.

    A piece counts only if it contains exactly one '|', its stripped polarity is one of the four labels and, for
    ATSA, its stripped term occurs verbatim (case-sensitive substring) in the sentence.
    """
    check_task(task)
    check_term = task == "atsa"
    pairs: list[Pair] = []
    for piece in text.split(";"):
        parts = piece.split("|")
        if len(parts) != 2:  # exactly one '|'
            continue
        polarity = parts[1].strip()
        if polarity not in _POLARITY_SET:
            continue
        element = parts[0].strip()
        if check_term and element not in sentence:
            continue
        pairs.append((element, polarity))
    return pairs


def structured_answer(raw: str, task: str, sentence: str) -> dict[str, Any]:
    """`{"raw": ..., "targets": [{"aspect" | "category": ..., "polarity": ...}, ...]}`: the pairs the scorer
    would count for this output, in output order, beside the raw string."""
    field = ELEMENT_FIELD[check_task(task)]
    return {"raw": raw, "targets": [{field: element, "polarity": polarity}
                                    for element, polarity in parse_prediction(raw, task, sentence)]}
