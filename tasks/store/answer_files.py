"""Teacher answers produced elsewhere (the paper's released corpus, an API batch job), read from JSONL.

One record per line with a review and its answer. Field names follow the paper's release (`ID`, `Text`,
`mixtral_response`) or the plain names (`id`, `review`, `response`); an optional `prompt` field names the prompt
(`analysis` / `rewrite`). Without it the prompt is inferred from the answer's shape: `Opinion Target N:` blocks
are what the analysis prompt asks for, anything else is a rewrite.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fsa_distill.benchmark.importers import jsonl_values
from fsa_distill.core.errors import InputError

PromptName = Literal["analysis", "rewrite"]
PROMPTS: tuple[PromptName, ...] = ("analysis", "rewrite")
REVIEW_FIELDS = ("Text", "review", "text")
RESPONSE_FIELDS = ("mixtral_response", "response")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ANALYSIS_BLOCK = re.compile(r"^\W*Opinion Target\s*\d+\W*:", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class AnswerRecord:
    """One imported answer: the review it answers, the answer, and the prompt it was asked with."""

    record_id: str
    review: str
    response: str
    prompt: PromptName


def infer_prompt(response: str) -> PromptName:
    """`analysis` when the answer has `Opinion Target N:` blocks, else `rewrite`."""
    return "analysis" if _ANALYSIS_BLOCK.search(response) else "rewrite"


def _first_string(record: dict, fields: tuple[str, ...]) -> str | None:
    for name in fields:
        if isinstance(record.get(name), str):
            return record[name]
    return None


def read_answer_file(path: Path, prompt: PromptName | Literal["infer"] = "infer") -> list[AnswerRecord]:
    """Every record of a JSONL answer file (UTF-8, a byte-order mark allowed); bad lines are InputErrors."""
    path = Path(path)
    try:
        # Not splitlines(): it also splits at U+2028/U+2029, which JSON allows raw inside a string.
        lines = _LINE_BREAK.split(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise InputError(path, None, "answer file not found") from None
    except UnicodeDecodeError as error:
        raise InputError(path, None, f"not UTF-8 text: {error}") from None
    records = []
    for number, value in jsonl_values(path, lines):
        if not isinstance(value, dict):
            raise InputError(path, f"line {number}", "each line must be a JSON object")
        review, response = _first_string(value, REVIEW_FIELDS), _first_string(value, RESPONSE_FIELDS)
        if review is None or response is None:
            raise InputError(path, f"line {number}",
                             f"needs a review ({' / '.join(REVIEW_FIELDS)}) and an answer "
                             f"({' / '.join(RESPONSE_FIELDS)}) as strings")
        declared = value.get("prompt", prompt)
        if declared == "infer":
            declared = infer_prompt(response)
        if declared not in PROMPTS:
            raise InputError(path, f"line {number}", f"prompt {declared!r} is not one of {list(PROMPTS)}")
        record_id = str(value.get("ID", value.get("id", number)))
        records.append(AnswerRecord(record_id, review, response, declared))
    if not records:
        raise InputError(path, None, "no answers in the file")
    return records
