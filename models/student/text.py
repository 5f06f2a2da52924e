"""The student's one text convention: a newline is the token `[NL]` (the paper's), in sources and targets alike.

The corpus stage writes reviews and responses this way, the tokenizer learns `[NL]` as a token of its own, and
decoding (models/student/decoding.py) applies the same two functions on the way in and out, so training, scoring
and serving see newlines identically.
"""

from __future__ import annotations

import re

NL_TOKEN = "[NL]"

_NL_PATTERN = re.compile(r"[ \t]*\[NL\][ \t]*")


def to_model_text(text: str) -> str:
    """Newlines become `[NL]`, so responses stay one line for the tokenizer."""
    return text.replace("\r\n", "\n").replace("\n", NL_TOKEN)


def from_model_text(text: str) -> str:
    """Inverse of `to_model_text` (the tokenizer puts a space after `[NL]`; it is dropped here)."""
    return _NL_PATTERN.sub("\n", text)
