"""Prompt templates as versioned files (`prompts/<name>.v<version>.txt`): a small `# key: value` header, a
`---` line, then the template with a `{review}` placeholder. The template's digest enters the cache key, so
editing a prompt (even without bumping the version) never reuses old answers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fsa_distill.core.digests import sha256_text
from fsa_distill.core.errors import InputError
from fsa_distill.core.paths import package_data
from fsa_distill.models.teacher.base import GenerationRequest

PROMPT_DIR = package_data("fsa_distill.models.teacher", "prompts")

# The analysis prompt's answer format as a regex for structured outputs (`generation.structured_outputs`):
# 1 to 8 blocks of `Opinion Target N: "..."` / `Aspect: "..."` / `Sentiment: <intensity> <polarity>` /
# `Reasoning: ...`, blank-line separated; what tasks/stages/validation.py parses. Bounded so a model cannot
# loop.
_SENTIMENT = (r"(?:(?:[Ss]trongly|[Mm]ildly|[Mm]oderately|[Ss]lightly|[Vv]ery|[Ss]omewhat) )?"
              r"(?:[Pp]ositive|[Nn]egative|[Nn]eutral|[Mm]ixed)")
_BLOCK = rf'Opinion Target \d{{1,2}}: "[^"\n]+"\nAspect: "[^"\n]+"\nSentiment: {_SENTIMENT}\nReasoning: [^\n]+'
ANSWER_FORMATS: dict[str, str] = {"analysis": rf"{_BLOCK}(?:\n\n{_BLOCK}){{0,7}}"}
PLACEHOLDER = "{review}"
_FILE_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.txt$")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    text: str
    digest: str

    @property
    def key(self) -> str:
        """Identity of the prompt in cache keys and datasets: name, version and template digest."""
        return f"{self.name}.v{self.version}:{self.digest[:16]}"

    def render(self, review: str, fields: Mapping[str, str] | None = None) -> str:
        """The prompt for one review; `fields` fill further `{name}` placeholders (the teacher baseline's)."""
        values = {"review": review, **(fields or {})}
        # One regex pass, not str.format or chained str.replace: reviews are full of braces users never meant as
        # fields, and text already filled in must not be scanned for placeholders again.
        placeholders = re.compile("|".join(re.escape("{" + name + "}") for name in values))
        return placeholders.sub(lambda match: values[match.group(0)[1:-1]], self.text)

    def request(self, review: str, fields: Mapping[str, str] | None = None, **sampling: object) -> GenerationRequest:
        """The chat request for one review (a single user turn; backends apply the chat template)."""
        messages = ({"role": "user", "content": self.render(review, fields)},)
        return GenerationRequest(messages=messages, **sampling)  # type: ignore[arg-type]


def available_prompts(prompt_dir: Path = PROMPT_DIR) -> dict[str, list[int]]:
    """Prompt names with their available versions, ascending."""
    found: dict[str, list[int]] = {}
    for path in prompt_dir.glob("*.txt"):
        match = _FILE_NAME.match(path.name)
        if match:
            found.setdefault(match["name"], []).append(int(match["version"]))
    return {name: sorted(versions) for name, versions in sorted(found.items())}


def parse_template_file(path: Path) -> PromptTemplate:
    raw = path.read_text(encoding="utf-8")
    header, separator, body = raw.partition("\n---\n")
    if not separator:
        raise InputError(path, None, "prompt file needs a header, a '---' line, then the template")
    fields = {}
    for line in header.splitlines():
        key, colon, value = line.lstrip("# ").partition(":")
        if colon:
            fields[key.strip()] = value.strip()
    text = body.strip("\n")
    if PLACEHOLDER not in text:
        raise InputError(path, None, f"template has no {PLACEHOLDER} placeholder")
    match = _FILE_NAME.match(path.name)
    name = fields.get("name") or (match["name"] if match else path.stem)
    version = fields.get("version") or (match["version"] if match else "1")
    return PromptTemplate(name=name, version=str(version), text=text, digest=sha256_text(text))


def load_prompt(name: str, version: int | None = None, prompt_dir: Path = PROMPT_DIR) -> PromptTemplate:
    """The named prompt at `version`, or its newest version."""
    versions = available_prompts(prompt_dir).get(name)
    if not versions:
        known = ", ".join(available_prompts(prompt_dir)) or "none"
        raise InputError(prompt_dir, name, f"unknown prompt; available: {known}")
    chosen = versions[-1] if version is None else version
    path = prompt_dir / f"{name}.v{chosen}.txt"
    if not path.exists():
        raise InputError(path, name, f"no version {chosen}; available: {versions}")
    return parse_template_file(path)
