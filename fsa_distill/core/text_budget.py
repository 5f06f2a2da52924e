"""How much of a review a model gets: cut by characters before any tokenizer sees it.

Shared by the review readers (benchmark/importers.py), `predict --ray` and the served model (models/serving.py),
so every path cuts a long review to the same text. A 10 MB review tokenized whole costs gigabytes. A token of
these tokenizers spans at most a few characters (a long word or a run of spaces), so
`max_tokens * MAX_CHARS_PER_TOKEN` characters always hold more than the model will read; the tokenizer then
truncates exactly.
"""

from __future__ import annotations

MAX_CHARS_PER_TOKEN = 16


def chars_for_tokens(max_tokens: int) -> int:
    """Characters kept per review for a model that reads `max_tokens` tokens."""
    return max_tokens * MAX_CHARS_PER_TOKEN


def cut_text(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars` characters (trailing white space of the cut dropped); short texts unchanged."""
    return text[:max_chars].rstrip() if len(text) > max_chars else text
