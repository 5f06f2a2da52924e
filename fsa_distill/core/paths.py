"""Up-front checks of the paths a command was given, so a wrong path fails in one clear line before any model
loads or any output is written (a directory where a file belongs, an unwritable output, a work dir that is a
file). The OS has the final word anyway; these checks only move the failure to the start.
"""

from __future__ import annotations

import os
import stat
import tempfile
from importlib.resources import files
from pathlib import Path

from fsa_distill.core.errors import InputError


def package_data(package: str, *parts: str) -> Path:
    """A file or folder shipped inside an installed package (profiles, prompts, checksums, the metric script),
    found through importlib.resources rather than the checkout's layout. pip installs wheels unzipped, so the
    resource is a real file and callers keep using Path (glob, read_text, evaluate.load by path)."""
    return Path(str(files(package).joinpath(*parts)))


def is_local_spec(spec: str | Path) -> bool:
    """A model spec is a local folder when it exists or looks like a path (hub ids are `owner/name`)."""
    text = str(spec)
    return Path(text).exists() or text.startswith((".", "/", "~")) or text.count("/") > 1


def check_input_file(path: str | Path, what: str = "input file") -> Path:
    """An existing, readable regular file (or FIFO such as /dev/stdin), else InputError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(path, None, f"{what} not found")
    if path.is_dir():
        raise InputError(path, None, f"{what} is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise InputError(path, None, f"{what} is not readable (permission denied)")
    return path


def check_input_dir(path: str | Path, what: str = "folder") -> Path:
    """An existing, readable directory, else InputError."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(path, None, f"{what} not found")
    if not path.is_dir():
        raise InputError(path, None, f"{what} is a file, not a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise InputError(path, None, f"{what} is not readable (permission denied)")
    return path


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _check_creatable(path: Path, folder: Path, what: str) -> None:
    """`folder` (where `path` goes) exists or can be created: its nearest existing ancestor is a writable
    directory.

    Writability is probed by creating (and at once removing) a temporary file there, because os.access says yes
    to root on a read-only file system.
    """
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        raise InputError(path, None, f"cannot create the {what}: {ancestor} is a file, not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise InputError(path, None, f"cannot write the {what} in {ancestor} ({error.strerror})") from None


def check_output_file(path: str | Path, what: str = "output file") -> Path:
    """A file path that can be (re)written: not a directory, its folder exists or can be created, writable."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(path, None, f"{what} is a directory, not a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(path, None, f"{what} is not writable (permission denied)")
    _check_creatable(path, path.parent, what)
    return path


def check_output_dir(path: str | Path, what: str = "output folder") -> Path:
    """A folder that exists and is writable, or can be created: not a file."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(path, None, f"{what} is a file, not a directory")
    _check_creatable(path, path, what)
    return path


def private_lock_dir(name: str = "fsa-distill-locks") -> Path:
    """A lock folder only this user can enter: `$XDG_RUNTIME_DIR/<name>`, else `$XDG_CACHE_HOME` (or
    `~/.cache`)`/<name>`; created 0700. Not the system temp dir: there the name is predictable and another user
    could create it first (and hold or swap the locks in it). An existing folder that is a link or belongs to
    someone else is refused."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(base) / name
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise InputError(folder, None, "lock folder is a link, not a folder, or not owned by this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        folder.chmod(0o700)
    return folder
