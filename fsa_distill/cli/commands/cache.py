"""`fsa-distill cache import`: bring teacher answers produced elsewhere into the answer store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.cli.console import print_json, stderr, user_errors


def import_answers(
    answers: Annotated[Path, typer.Argument(help="JSONL: ID, Text (review), mixtral_response (or id/review/"
                                                 "response), optional prompt.")],
    teacher_id: Annotated[str, typer.Option("--teacher-id", help="Name the answers are stored under; a run "
                                            "with teacher.backend=imported and teacher.model=<this> uses them.")],
    prompt: Annotated[str, typer.Option(help="analysis, rewrite, or infer (Opinion Target blocks = analysis); "
                                             "a record's own `prompt` field wins.")] = "infer",
    profile: Annotated[str, typer.Option(help="Config profile whose work dir and prompts apply.")] = "demo",
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML merged over the profile.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="e.g. work_dir=/data/work.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON line of stats.")] = False,
) -> None:
    """Validate every answer like a generated one and store it under the teacher id (idempotent)."""
    with user_errors():
        from fsa_distill.core.config import ConfigError, resolve_config
        from fsa_distill.tasks.answer_files import PROMPTS, read_answer_file
        from fsa_distill.tasks.answer_import import import_answers as run_import

        if prompt not in (*PROMPTS, "infer"):
            raise ConfigError(f"--prompt {prompt!r}: choose analysis, rewrite or infer")
        config = resolve_config(profile, config_file, overrides or [])
        stats = run_import(read_answer_file(answers, prompt), config, teacher_id)  # type: ignore[arg-type]
    if json_output:
        print_json(stats)
        return
    for key, value in stats.items():
        stderr.print(f"{key:>18}: {value}", highlight=False, markup=False)
