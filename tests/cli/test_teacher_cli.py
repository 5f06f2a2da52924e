"""`fsa-distill generate` end to end against a local OpenAI-compatible server (no vLLM needed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from fsa_distill.cli.commands.generate import generate


def app() -> typer.Typer:
    application = typer.Typer()
    application.command()(generate)
    return application


def test_generate_command_prints_stats_and_reruns_from_cache(tmp_path: Path, flaky_server) -> None:
    server = flaky_server([503])
    corpus = tmp_path / "reviews.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"r{i}", "text": f"Review {i}: the soup was cold."}) + "\n"
                              for i in range(5)))
    args = ["--corpus", str(corpus), "--prompts", "rewrite", "--out", str(tmp_path / "out"),
            "--backend", "openai", "--base-url", server.base_url, "--teacher", "served",
            "--max-tokens", "32", "--set", f"work_dir={tmp_path / 'work'}", "--json"]
    first = CliRunner().invoke(app(), args)
    assert first.exit_code == 0, first.output
    stats = json.loads(first.stdout.strip().splitlines()[-1])
    assert stats["reviews"] == 5 and stats["generated"] == 5 and stats["cached"] == 0
    for key in ("rejected", "tokens", "tokens_per_s"):
        assert key in stats
    again = json.loads(CliRunner().invoke(app(), args).stdout.strip().splitlines()[-1])
    assert again["generated"] == 0 and again["cached"] == 5


def test_generate_command_reports_bad_options_as_user_errors(tmp_path: Path) -> None:
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("Nice place.\n")
    result = CliRunner().invoke(app(), ["--corpus", str(corpus), "--out", str(tmp_path / "out"),
                                        "--backend", "carrier-pigeon", "--json"])
    assert result.exit_code == 2
    missing = CliRunner().invoke(app(), ["--corpus", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2
