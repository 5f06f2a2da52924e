"""The review-corpus inbox: find corpora users dropped in a folder or bucket, validate them, accept them once.

A corpus is identified by the SHA-256 of its bytes, not its name, so re-uploading the same file (or the same
file under a new name) never retrains, and editing a file in place does. Accepted corpora are copied into
`<work_dir>/corpora/<digest>.<ext>` (the store every later run trains on); a digest enters the ledger
(`<work_dir>/inbox_ledger.json`) only after a distill run trained on it, so a failed run retries the corpus on the
next poll. Files that cannot be read or validated are moved to `<inbox>/rejected/` next to a `<name>.reason.txt`.

fsspec does the listing, reading and moving, so the inbox may be a local path or any URI fsspec supports
(`s3://bucket/inbox` with s3fs installed, `gs://…`, `memory://…` in tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from filelock import FileLock

from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_file, write_json_atomically

CORPUS_SUFFIXES = (".jsonl", ".csv", ".txt")
REJECTED_DIR = "rejected"
# Uploads still in progress (browsers, gsutil, rsync) and our own reason files are not corpora.
IGNORED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".reason.txt")
LEDGER_NAME = "inbox_ledger.json"
STORE_NAME = "corpora"


@dataclass
class AcceptedCorpus:
    """A validated corpus in the store: where it came from, its digest and how many reviews it holds."""

    source: str
    digest: str
    stored_path: str
    n_reviews: int


@dataclass
class RejectedCorpus:
    source: str
    moved_to: str | None  # None when even moving it aside failed (the reason says why)
    reason: str


@dataclass
class InboxScan:
    """What one look at the inbox found."""

    new: list[AcceptedCorpus] = field(default_factory=list)
    rejected: list[RejectedCorpus] = field(default_factory=list)
    already_processed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _suffix(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


class Ledger:
    """Digests already trained on, in one JSON file written atomically under a file lock (two flow runs may
    poll at once)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = FileLock(str(self.path) + ".lock", timeout=120)

    def read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise InputError(self.path, f"line {error.lineno}", f"inbox ledger is not valid JSON: {error.msg}")
        return dict(loaded.get("processed", {}))

    def processed(self) -> set[str]:
        return set(self.read())

    def record(self, corpora: list[AcceptedCorpus], **details: Any) -> None:
        """Mark corpora as trained on; `details` (e.g. mlflow_run_id) are stored with each entry."""
        with self.lock:
            entries = self.read()
            now = datetime.now(UTC).isoformat(timespec="seconds")
            for corpus in corpora:
                entries[corpus.digest] = {
                    "source": corpus.source,
                    "stored_path": corpus.stored_path,
                    "n_reviews": corpus.n_reviews,
                    "processed_at": now,
                    **details,
                }
            payload = {"version": 1, "processed": entries}
            write_json_atomically(self.path, payload, sort_keys=True)


def list_candidates(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """Files directly in the inbox (not in `rejected/`), oldest name first; hidden and partial files skipped."""
    if not fs.exists(root):
        raise InputError(root, None, "inbox folder does not exist")
    paths = []
    for entry in fs.ls(root, detail=True):
        name = PurePosixPath(entry["name"]).name
        # Folders (rejected/ among them) are not corpora; "other" (a dangling link, a socket) is tried and
        # rejected as unreadable so the user hears about it.
        if entry.get("type") == "directory" or name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
            continue
        paths.append(entry["name"])
    return sorted(paths)


def _not_regular(info: dict[str, Any]) -> str | None:
    """Why an inbox entry is not read: a symbolic link (its target may be anything the scanning user can read)
    or not a regular file (a FIFO would block the scan, a device never ends); None for a regular file."""
    if info.get("islink"):
        return "a symbolic link: not followed (put the file itself into the inbox)"
    if info.get("type") != "file":
        return f"not a regular file ({info.get('type')}): not read"
    return None


def _validate(data: bytes, name: str, text_field: str) -> int:
    """Parse the bytes with the project's corpus reader; returns the review count or raises InputError."""
    from fsa_distill.benchmark.importers import read_review_corpus

    suffix = _suffix(name)
    if suffix not in CORPUS_SUFFIXES:
        raise InputError(name, None, f"unsupported file type {suffix or '(none)'}; use {', '.join(CORPUS_SUFFIXES)}")
    with tempfile.TemporaryDirectory(prefix="fsa-inbox-") as folder:
        local = Path(folder) / PurePosixPath(name).name
        local.write_bytes(data)
        try:
            reviews = read_review_corpus(local, text_field=text_field)
        except InputError as error:
            # Report the user's file name, not our temporary copy.
            raise InputError(name, error.location, error.problem) from None
        except (UnicodeDecodeError, ValueError) as error:
            raise InputError(name, None, f"cannot be read as a review corpus: {error}") from None
    if not reviews:
        raise InputError(name, None, "contains no reviews")
    return len(reviews)


def reject(fs: fsspec.AbstractFileSystem, root: str, path: str, reason: str) -> RejectedCorpus:
    """Move a bad corpus to `<inbox>/rejected/` and write `<name>.reason.txt` beside it."""
    name = PurePosixPath(path).name
    rejected_dir = f"{root.rstrip('/')}/{REJECTED_DIR}"
    target = f"{rejected_dir}/{name}"
    try:
        fs.makedirs(rejected_dir, exist_ok=True)
        if fs.exists(target):  # an older rejected file of the same name: keep both
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            target = f"{rejected_dir}/{stamp}-{name}"
        fs.mv(path, target)
        fs.pipe_file(f"{target}.reason.txt", f"{reason}\n".encode())
        return RejectedCorpus(source=path, moved_to=target, reason=reason)
    except OSError as error:
        return RejectedCorpus(source=path, moved_to=None, reason=f"{reason} (could not move it aside: {error})")


def scan_inbox(inbox: str, work_dir: Path, text_field: str = "text") -> InboxScan:
    """Accept every new valid corpus into `<work_dir>/corpora/`, move bad ones aside, skip known digests."""
    fs, root = fsspec.core.url_to_fs(inbox)
    ledger = Ledger(Path(work_dir) / LEDGER_NAME)
    processed = ledger.processed()
    store = Path(work_dir) / STORE_NAME
    scan = InboxScan()
    seen_now: set[str] = set()
    for path in list_candidates(fs, root):
        name = PurePosixPath(path).name
        try:
            info = fs.info(path)
            problem = _not_regular(info)
            data = b"" if problem else fs.cat_file(path)
        except OSError as error:
            problem = f"unreadable: {error}"
        if problem:
            scan.rejected.append(reject(fs, root, path, f"{name}: {problem}"))
            continue
        digest = sha256_bytes(data)
        if digest in processed or digest in seen_now:
            scan.already_processed.append(path)
            continue
        try:
            n_reviews = _validate(data, name, text_field)
        except InputError as error:
            scan.rejected.append(reject(fs, root, path, str(error)))
            continue
        stored = store / f"{digest}{_suffix(name)}"
        if not stored.exists():
            with atomic_file(stored, "wb") as handle:
                handle.write(data)
            if isinstance(info.get("mode"), int):  # a local file: the copy is no more readable than the original
                os.chmod(stored, stat.S_IMODE(info["mode"]) & 0o666)
        seen_now.add(digest)
        scan.new.append(AcceptedCorpus(source=path, digest=digest, stored_path=str(stored), n_reviews=n_reviews))
    return scan


def accepted_corpora(work_dir: Path) -> list[Path]:
    """Every corpus in the store (those trained on and those accepted by a run that has not finished)."""
    store = Path(work_dir) / STORE_NAME
    if not store.exists():
        return []
    return sorted(path for path in store.iterdir() if path.suffix in CORPUS_SUFFIXES and not path.name.startswith("."))
