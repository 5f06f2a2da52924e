"""Errors users can act on: they name the file, the place in it and the problem."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input (a data file, a model folder, a config). The CLI prints it and exits with code 2."""

    def __init__(self, path: str | Path | None, location: str | None, problem: str) -> None:
        self.path = str(path) if path is not None else None
        self.location = location
        self.problem = problem
        where = ": ".join(part for part in (self.path, location) if part)
        super().__init__(f"{where}: {problem}" if where else problem)


class StoreError(Exception):
    """A store the user configured (named with its secrets redacted) failed: unreachable, refused the login,
    not a database, read-only, a folder. The CLI prints `error: <store>: <cause>` and exits with code 2."""

    def __init__(self, store: str, problem: str) -> None:
        self.store = store
        self.problem = problem
        super().__init__(f"{store}: {problem}")

    def __str__(self) -> str:  # explicit: OSError (a ConnectionError subclass) would print `[Errno store] ...`
        return f"{self.store}: {self.problem}"
