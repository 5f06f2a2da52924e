"""How varied a student's outputs are: the first sign of a collapsed student.

A student that writes one string for every sentence can still score a few F1 points on a benchmark where one
aspect ("food") is common, so a run reports, next to F1, how many distinct outputs it wrote per test sentence and
how large a share of the sentences got the single most common output.
"""

from __future__ import annotations

from collections import Counter

COLLAPSE_SHARE = 0.5  # one output for more than half the sentences: the run warns


def output_variety(predictions: list[str]) -> dict[str, float | int | str]:
    """distinct outputs, distinct per sentence, the most common output and its share of the sentences."""
    if not predictions:
        return {"distinct_outputs": 0, "distinct_per_sentence": 0.0, "top_share": 0.0, "top_output": ""}
    counts = Counter(predictions)
    top_output, top_count = counts.most_common(1)[0]
    return {"distinct_outputs": len(counts), "distinct_per_sentence": len(counts) / len(predictions),
            "top_share": top_count / len(predictions), "top_output": top_output}


def collapse_warning(name: str, variety: dict[str, float | int | str]) -> str | None:
    """A one-line warning when one output covers more than half the sentences, else None."""
    share = float(variety.get("top_share", 0.0))
    if share <= COLLAPSE_SHARE:
        return None
    return (f"warning: {name}: one output covers {100 * share:.0f}% of the test sentences "
            f"({variety.get('top_output')!r}); the student has collapsed to a few answers")
