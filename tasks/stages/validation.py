"""Cheap checks every teacher answer passes before it may enter the distillation corpus.

Each check returns a reason code (or None); the first failing check names the rejection. The checks are
deliberately dependency-free heuristics: they run on every answer of a run of hundreds of thousands.
"""

from __future__ import annotations

import re
from collections import Counter

from fsa_distill.models.teacher.base import TeacherAnswer

EMPTY = "empty"
TRUNCATED = "truncated"
REPETITION = "repetition"
LANGUAGE = "wrong_language"
TARGET_NOT_IN_REVIEW = "target_not_in_review"
NO_TARGETS = "no_opinion_targets"
BACKEND_ERROR = "backend_error"
REASONS = (BACKEND_ERROR, EMPTY, TRUNCATED, REPETITION, LANGUAGE, NO_TARGETS, TARGET_NOT_IN_REVIEW)

MIN_CHARS = 8
REPEAT_NGRAM = 4
MAX_REPEATED_NGRAM_RATIO = 0.5  # share of word 4-grams that repeat an earlier one
MIN_WORDS_FOR_REPETITION = 24
MAX_SAME_LINE_SHARE = 0.5  # one non-blank line making up over half of all lines: a loop

_TARGET = re.compile(r'^\s*\**\s*Opinion Target\s*\d*\s*\**\s*:\s*\**\s*(.+?)\s*$', re.IGNORECASE | re.MULTILINE)
# A quoted target runs to its own closing quote; a single quote followed by a letter is an apostrophe inside
# the target ('Joe's pizza'), not its end.
_QUOTED = re.compile(r'^(?:"(.+?)["”]|“(.+?)[”"]|\'(.+?)\'(?!\w)|‘(.+?)[’\'](?!\w)|`(.+?)`)')
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?", re.UNICODE)
_STOPWORDS = frozenset(
    (
        "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because",
        "been", "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he",
        "her", "him", "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "more", "most",
        "my", "no", "not", "of", "on", "one", "only", "or", "our", "out", "over", "she", "so", "some", "than",
        "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "too", "up", "us",
        "very", "was", "we", "were", "what", "when", "which", "who", "will", "with", "would", "you", "your",
    )
)


def repeated_ngram_ratio(text: str, n: int = REPEAT_NGRAM) -> float:
    """Share of word n-grams that already occurred earlier in the text (0 = no repetition)."""
    words = text.lower().split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def same_line_share(text: str) -> float:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 4:
        return 0.0
    return Counter(lines).most_common(1)[0][1] / len(lines)


def is_degenerate(text: str) -> bool:
    words = text.split()
    if len(words) >= MIN_WORDS_FOR_REPETITION and repeated_ngram_ratio(text) > MAX_REPEATED_NGRAM_RATIO:
        return True
    return same_line_share(text) > MAX_SAME_LINE_SHARE


def ascii_letter_share(text: str) -> float:
    """Share of letters that are ASCII (Latin script without accents)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    return sum(c.isascii() for c in letters) / len(letters)


def stopword_share(text: str) -> float:
    """Share of words that are common English function words (~0.4 for English prose, ~0 otherwise)."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return 0.0
    return sum(w in _STOPWORDS for w in words) / len(words)


def is_wrong_language(review: str, response: str) -> bool:
    """The answer's script or language differs clearly from the review's (e.g. English review, answer in
    Chinese or French). Reviews too short to judge never reject."""
    if ascii_letter_share(review) - ascii_letter_share(response) > 0.3:
        return True
    review_english = len(_WORD.findall(review)) >= 5 and stopword_share(review) >= 0.15
    return review_english and len(_WORD.findall(response)) >= 20 and stopword_share(response) < 0.05


def parse_opinion_targets(text: str) -> list[str]:
    """Targets of `Opinion Target N: "x"` lines, quotes and markdown stripped."""
    targets = []
    for raw in _TARGET.findall(text):
        target = raw.strip().strip("*").strip()
        quoted = _QUOTED.match(target)
        inner = next((group for group in quoted.groups() if group is not None), "") if quoted else target
        targets.append(inner.strip())
    return [t for t in targets if t]


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def targets_missing_from_review(review: str, response: str) -> list[str]:
    """Targets that occur nowhere in the review (case-, punctuation- and spacing-insensitive): invented."""
    haystack = f" {_normalise(review)} "
    return [t for t in parse_opinion_targets(response) if f" {_normalise(t)} " not in haystack]


def validate_response(review: str, prompt: str, result: TeacherAnswer) -> str | None:
    """The rejection reason for one answer, or None when it may be used."""
    if result.finish_reason == "error":
        return BACKEND_ERROR
    text = result.text.strip()
    if len(text) < MIN_CHARS:
        return EMPTY
    if result.finish_reason == "length":
        return TRUNCATED
    if is_degenerate(text):
        return REPETITION
    if is_wrong_language(review, text):
        return LANGUAGE
    if prompt == "analysis":
        if not parse_opinion_targets(text):
            return NO_TARGETS
        if targets_missing_from_review(review, text):
            return TARGET_NOT_IN_REVIEW
    return None
