"""Give predicted aspect terms back the review's own spelling.

An uncased student (the MiniLM-BART's WordPiece lower-cases and strips accents, and its decoder puts spaces around
punctuation) writes `chef 's special` for a review's "Chef's Special"; the scorer counts a term only when it occurs
verbatim in the sentence, and a served answer should quote the review. So every `term | polarity` piece of an
output is looked up in its source, ignoring case, accents and whitespace, and the source's own span replaces it.
Both engines (decoding.py, engines.py) call `respell_output`, so the scored path and the served path agree.
"""

from __future__ import annotations

import unicodedata
from typing import Any

PIECE_SEPARATOR = ";"
PAIR_SEPARATOR = "|"


def _folded(text: str) -> tuple[str, list[int]]:
    """`text` lower-cased, without accents or whitespace, and for each of its characters the source index."""
    chars: list[str] = []
    index: list[int] = []
    for position, char in enumerate(text):
        for folded in unicodedata.normalize("NFD", char.lower()):
            if not folded.isspace() and not unicodedata.combining(folded):
                chars.append(folded)
                index.append(position)
    return "".join(chars), index


def _at_word_edges(source: str, start: int, end: int) -> bool:
    return (start == 0 or not source[start - 1].isalnum()) and (end == len(source) or not source[end].isalnum())


def source_span(source: str, term: str) -> str | None:
    """The span of `source` that spells `term` (case, accents and spaces aside), preferring whole words."""
    folded_source, index = _folded(source)
    folded_term, _ = _folded(term)
    if not folded_term:
        return None
    spans = []
    at = folded_source.find(folded_term)
    while at >= 0:
        spans.append((index[at], index[at + len(folded_term) - 1] + 1))
        at = folded_source.find(folded_term, at + 1)
    if not spans:
        return None
    start, end = next((span for span in spans if _at_word_edges(source, *span)), spans[0])
    return source[start:end]


def respell_output(source: str, output: str) -> str:
    """`output` with the term of each `term | polarity` piece spelled as in `source` (other pieces unchanged)."""
    pieces = []
    for piece in output.split(PIECE_SEPARATOR):
        parts = piece.split(PAIR_SEPARATOR)
        if len(parts) == 2 and parts[0].strip():
            span = source_span(source, parts[0].strip())
            if span is not None and span != parts[0].strip():
                lead = parts[0][:len(parts[0]) - len(parts[0].lstrip())]
                trail = parts[0][len(parts[0].rstrip()):]
                piece = f"{lead}{span}{trail}{PAIR_SEPARATOR}{parts[1]}"
        pieces.append(piece)
    return PIECE_SEPARATOR.join(pieces)


def is_uncased(tokenizer: Any) -> bool:
    """True for tokenizers that lower-case their input (their outputs need `respell_output`)."""
    cached = getattr(tokenizer, "_fsa_uncased", None)
    if cached is None:
        cached = tokenizer.tokenize("Zebra Quartz") == tokenizer.tokenize("zebra quartz")
        try:
            tokenizer._fsa_uncased = cached
        except AttributeError:  # a tokenizer that refuses new attributes is asked again next time
            pass
    return cached


def finish_outputs(tokenizer: Any, sources: list[str], outputs: list[str]) -> list[str]:
    """The engines' last step: respelled terms for an uncased student, the outputs unchanged otherwise."""
    if not is_uncased(tokenizer):
        return outputs
    return [respell_output(source, output) for source, output in zip(sources, outputs, strict=True)]
