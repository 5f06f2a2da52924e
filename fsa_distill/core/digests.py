"""Content digests: every cache key in fsa-distill is built from these, never from timestamps or paths."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Digest of a JSON-serialisable value, independent of dict key order."""
    return sha256_text(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str))


def sha256_tree(root: str | Path, pattern: str = "**/*") -> str:
    """Digest of every file under `root` (relative names and bytes), e.g. a model folder."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.glob(pattern) if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()
