"""Shared CLI behaviour: user errors become one clear line on stderr and exit code 2.

`user_errors()` is the one place where failures a user can fix are turned into that line, for every command.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from fsa_distill.core.config import ConfigError
from fsa_distill.core.errors import InputError, StoreError
from fsa_distill.core.redact import redact_text

# soft_wrap: rich hard-wraps at 80 columns when stderr is not a terminal (logs, CI); an error stays one line.
stderr = Console(stderr=True, soft_wrap=True)

EXIT_BAD_INPUT = 2


def _one_line(text: str) -> str:
    """Collapse the line breaks a library put into its message (e.g. a loader's multi-line error)."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def print_error(message: str) -> None:
    """`error: <message>` on stderr, never wrapped, markup in the message printed as is."""
    if stderr.is_terminal:
        stderr.print("[bold red]error:[/] ", end="", highlight=False)
        stderr.print(message, highlight=False, markup=False)
    else:
        # One write: several processes (torchrun ranks) may report at once, and with unbuffered stderr `print`
        # writes the text and its newline separately, so two ranks' lines ran together on one line.
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()


def _os_error_message(error: OSError) -> str | None:
    """`<file>: <problem>` for an OS error about a file the user named (a directory given as a file, no
    permission, a full disk); None for OS errors without a file (sockets), which are not the user's input."""
    if error.filename is None:
        return None
    problem = {
        IsADirectoryError: "expected a file, got a directory",
        NotADirectoryError: "a part of this path is a file, not a directory",
        PermissionError: "permission denied",
        FileNotFoundError: "not found",
    }.get(type(error), error.strerror or type(error).__name__)
    target = f" -> {error.filename2}" if error.filename2 else ""
    return f"{error.filename}{target}: {problem}"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn InputError / ConfigError / StoreError / file OSErrors into `error: <file>: <where>: <problem>` and
    exit code 2; any URL in the message is redacted."""
    try:
        yield
    except InputError as error:
        print_error(_one_line(redact_text(str(error))))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except ConfigError as error:
        print_error(redact_text(str(error).strip()))  # may list several keys (and quote a --set URL)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except StoreError as error:  # before OSError: an unreachable store is also a ConnectionError
        print_error(_one_line(redact_text(str(error))))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except OSError as error:
        message = _os_error_message(error)
        if message is None:
            raise
        print_error(_one_line(message))
        raise typer.Exit(EXIT_BAD_INPUT) from None


def print_json(payload: dict[str, Any]) -> None:
    """Machine-readable summaries go to stdout as exactly one JSON line."""
    print(json.dumps(payload, ensure_ascii=False), flush=True)


def print_rank_zero_summary(summary: dict[str, Any], as_json: bool, line: Callable[[dict[str, Any]], str]) -> None:
    """A training command's summary, as JSON or as one line; under torchrun / accelerate launch only rank 0
    reports (the ranks share one result)."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        print_json(summary)
    else:
        typer.echo(line(summary))
