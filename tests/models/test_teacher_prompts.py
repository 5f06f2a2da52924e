"""Prompt templates: versioned files, digests in the identity, braces in reviews are harmless."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsa_distill.core.errors import InputError
from fsa_distill.models.teacher.prompts import available_prompts, load_prompt


def test_the_papers_two_prompts_ship() -> None:
    assert {"analysis", "rewrite"} <= set(available_prompts())
    analysis = load_prompt("analysis")
    assert analysis.version == "1" and "Opinion Target 1:" in analysis.text
    assert "first person" in load_prompt("rewrite").text
    assert analysis.key.startswith("analysis.v1:")


def test_render_keeps_braces_and_builds_a_chat_request() -> None:
    request = load_prompt("rewrite").request("Great {pizza} {review}!", max_tokens=7)
    content = request.messages[0]["content"]
    assert content.endswith("Review: Great {pizza} {review}!")
    assert request.messages[0]["role"] == "user" and request.max_tokens == 7


def test_newest_version_wins_and_digest_follows_text(tmp_path: Path) -> None:
    for version, body in ((1, "Old {review}"), (2, "New {review}")):
        (tmp_path / f"custom.v{version}.txt").write_text(f"# name: custom\n# version: {version}\n---\n{body}\n")
    newest = load_prompt("custom", prompt_dir=tmp_path)
    older = load_prompt("custom", version=1, prompt_dir=tmp_path)
    assert newest.version == "2" and newest.text == "New {review}"
    assert newest.digest != older.digest


def test_bad_prompts_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown prompt"):
        load_prompt("nope")
    (tmp_path / "broken.v1.txt").write_text("# name: broken\n---\nno placeholder here\n")
    with pytest.raises(InputError, match="placeholder"):
        load_prompt("broken", prompt_dir=tmp_path)
