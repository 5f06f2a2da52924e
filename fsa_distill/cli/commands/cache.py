"""`fsa-distill cache import|export`: move teacher answers into, out of and between answer stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.cli.console import print_json, stderr, user_errors

_PROFILE = typer.Option(help="Config profile whose work dir, answer store and prompts apply.")
_CONFIG = typer.Option("--config", help="YAML merged over the profile.")
_SET = typer.Option("--set", help="e.g. work_dir=/data/work or generation.cache_url=postgresql://host/db.")
_STORE = typer.Option("--store", help="Answer store (SQLite path or postgresql:// URL) instead of the config's.")


def _report(stats: dict, json_output: bool) -> None:
    if json_output:
        print_json(stats)
        return
    for key, value in stats.items():
        stderr.print(f"{key:>22}: {value}", highlight=False, markup=False)


def import_answers(
    answers: Annotated[Path, typer.Argument(help="A `cache export` file (JSONL or Parquet), or answer JSONL: ID, "
                                                 "Text (review), mixtral_response (or id/review/response), "
                                                 "optional prompt.")],
    teacher_id: Annotated[str | None, typer.Option("--teacher-id", help="Name the answers are stored under; a "
                                                   "run with teacher.backend=imported and teacher.model=<this> "
                                                   "uses them. A `cache export` file carries its own: "
                                                   "there it may only repeat it.")] = None,
    prompt: Annotated[str, typer.Option(help="analysis, rewrite, or infer (Opinion Target blocks = analysis); "
                                             "a record's own `prompt` field wins.")] = "infer",
    profile: Annotated[str, _PROFILE] = "demo",
    config_file: Annotated[Path | None, _CONFIG] = None,
    overrides: Annotated[list[str] | None, _SET] = None,
    store: Annotated[str | None, _STORE] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON line of stats.")] = False,
) -> None:
    """Store answers (idempotent, all or nothing): exported attempts under their own keys, other answers
    validated like generated ones under the teacher id. Every record is checked before one transaction writes
    them; stats count what was stored, already there, and refused."""
    with user_errors():
        from fsa_distill.core.config import ConfigError, resolve_config
        from fsa_distill.tasks.stages.generate import GenerateSettings
        from fsa_distill.tasks.stages.import_answers import import_answers as run_import
        from fsa_distill.tasks.store.answer_files import PROMPTS, read_answer_file
        from fsa_distill.tasks.store.answers import open_store, store_location
        from fsa_distill.tasks.store.transfer import import_store_export, is_store_export

        if prompt not in (*PROMPTS, "infer"):
            raise ConfigError(f"--prompt {prompt!r}: choose analysis, rewrite or infer")
        config = resolve_config(profile, config_file, overrides or [])
        location = store or store_location(config.work_dir, config.generation.cache_url)
        if teacher_id is not None and not teacher_id.strip():
            raise ConfigError("--teacher-id must not be empty")
        if answers.is_file() and is_store_export(answers):
            with open_store(location) as answer_store:
                stats = import_store_export(answers, answer_store, teacher_id)
        else:
            if teacher_id is None:
                raise ConfigError("--teacher-id is required for answers that are not a `cache export` file")
            stats = run_import(read_answer_file(answers, prompt), GenerateSettings.of(config), teacher_id,
                               location)
    _report(stats, json_output)


def export_answers(
    out: Annotated[Path, typer.Argument(help="File to write (replaced atomically).")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl or parquet.")] = "jsonl",
    profile: Annotated[str, _PROFILE] = "demo",
    config_file: Annotated[Path | None, _CONFIG] = None,
    overrides: Annotated[list[str] | None, _SET] = None,
    store: Annotated[str | None, _STORE] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON line of stats.")] = False,
) -> None:
    """Write every stored attempt (key, teacher id, prompt version, answer, rejection reason) to a file."""
    with user_errors():
        from fsa_distill.core.config import ConfigError, resolve_config
        from fsa_distill.core.paths import check_output_file
        from fsa_distill.core.urls import SQLITE, store_target
        from fsa_distill.tasks.store.answers import open_store, store_location
        from fsa_distill.tasks.store.transfer import export_store

        if fmt not in ("jsonl", "parquet"):
            raise ConfigError(f"--format {fmt!r}: choose jsonl or parquet")
        check_output_file(out, "export file")  # before the store is opened: a folder is named as such
        config = resolve_config(profile, config_file, overrides or [])
        location = store or store_location(config.work_dir, config.generation.cache_url)
        kind, target = store_target(location)
        if kind == SQLITE and not Path(target).exists():
            raise ConfigError(f"no answer store at {target}")
        with open_store(location) as answer_store:
            stats = export_store(answer_store, out, fmt)  # type: ignore[arg-type]
    _report(stats, json_output)
