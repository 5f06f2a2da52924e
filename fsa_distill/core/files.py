"""Write-to-temp-then-rename, so a crash or a bad input never leaves a half-written model or file behind."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _sibling(path: Path) -> Path:
    """A unique hidden name beside `path` (same file system, so the final rename is atomic)."""
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a sibling temp folder; on success it replaces `out_dir` (the old one survives any failure)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out_dir)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _sibling(out_dir)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; it is flushed to disk and renamed over `path` only when the block
    finishes cleanly, so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path)
    try:
        with open(tmp, mode.replace("w", "x"), encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_leftover_temporaries(folder: Path) -> list[Path]:
    """Delete the temp files/folders that a killed writer left in `folder` (the rename never happened).

    Only for folders one process writes at a time (e.g. under the work dir's model-heavy lock): another
    writer's temporary in progress would look the same.
    """
    leftovers = sorted(Path(folder).glob(".*.tmp")) if Path(folder).is_dir() else []
    for leftover in leftovers:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return leftovers


def write_json_atomically(path: Path, payload: Any, **dump_options: Any) -> None:
    """`payload` as indented UTF-8 JSON at `path`, all or nothing."""
    with atomic_file(path) as handle:
        json.dump(payload, handle, ensure_ascii=False, indent=2, **dump_options)
        handle.write("\n")
