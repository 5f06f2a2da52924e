"""Shared CLI behaviour: user errors become one clear line on stderr and exit code 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

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
        stderr.print(f"[bold red]error:[/] {error}", highlight=False, markup=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None


def print_json(payload: dict[str, Any]) -> None:
    """Machine-readable summaries go to stdout as exactly one JSON line."""
    print(json.dumps(payload, ensure_ascii=False), flush=True)
