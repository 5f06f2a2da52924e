"""Shared CLI behaviour: user errors become one clear line on stderr and exit code 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from fsa_distill.core.config import ConfigError
from fsa_distill.core.errors import InputError

stderr = Console(stderr=True)

EXIT_BAD_INPUT = 2


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn InputError / ConfigError into `error: <file>: <where>: <problem>` and exit code 2."""
    try:
        yield
    except (InputError, ConfigError) as error:
        # escape: messages quote user values such as `[atsa/rest15]`, which rich would take for markup;
        # soft_wrap: one line per problem whatever the terminal width (logs and CI are 80 columns).
        stderr.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def print_json(payload: dict[str, Any]) -> None:
    """Machine-readable summaries go to stdout as exactly one JSON line."""
    print(json.dumps(payload, ensure_ascii=False), flush=True)
