"""The fine-grained sentiment benchmark: find it (or download it, SHA-256 verified), read it, load it as HF datasets.

Files are JSON arrays written with a UTF-8 byte-order mark, so they are always read as `utf-8-sig`.
The test split is test.json followed by hard_test.json (the paper's protocol, ../shared/README.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsa_distill.benchmark.targets import TASKS, linearise
from fsa_distill.core.config import DATASETS, DataConfig
from fsa_distill.core.errors import InputError
from fsa_distill.core.paths import package_data

if TYPE_CHECKING:
    import datasets

CHECKSUMS_PATH = package_data("fsa_distill.benchmark", "checksums.json")
DEFAULT_DOWNLOAD_DIR = Path("data/fsa_datasets")
SPLITS = ("train", "dev", "test", "hard_test")
SPLIT_FILES = {"train": ("train",), "dev": ("dev",), "test": ("test", "hard_test"), "hard_test": ("hard_test",)}


@cache
def checksums() -> dict[str, Any]:
    """Pinned upstream commit and the SHA-256 of every benchmark file (relative path → {sha256, bytes})."""
    return json.loads(CHECKSUMS_PATH.read_text(encoding="utf-8"))


def raw_base_url() -> str:
    """Raw-file URL of the benchmark folder at the pinned commit; a file's URL is `<base>/<task>/<dataset>/<split>.json`."""
    pinned = checksums()
    return f"https://raw.githubusercontent.com/{pinned['repository']}/{pinned['commit']}/{pinned['folder']}"


def _default_local_dirs() -> list[Path]:
    """./data/fsa_datasets then ../shared/fsa_datasets, from the working directory (never from where the package
    is installed: an installed copy has no checkout around it)."""
    candidates = [Path("data/fsa_datasets"), Path("../shared/fsa_datasets")]
    unique: dict[Path, None] = {}
    for candidate in candidates:
        unique.setdefault(candidate.resolve(), None)
    return list(unique)


def is_complete(folder: Path) -> bool:
    """Whether a folder holds every benchmark file (a half-finished copy does not count)."""
    return folder.is_dir() and all((folder / name).is_file() for name in checksums()["files"])


def resolve_data_dir(
    data_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    local_dirs: Sequence[Path] | None = None,
    download_to: Path | None = None,
    base_url: str | None = None,
) -> Path:
    """Find the benchmark folder: `data_dir`, FSA_DATA_DIR in `environ`, ./data/fsa_datasets, ../shared/fsa_datasets,
    else download it into `download_to` (default ./data/fsa_datasets).

    `environ` defaults to no environment at all: only the CLI / config resolution hands os.environ in.
    """
    explicit = data_dir or (environ or {}).get("FSA_DATA_DIR")
    if explicit:
        folder = Path(explicit).expanduser()
        if not folder.is_dir():
            raise InputError(folder, None, "benchmark folder not found (from --data-dir / FSA_DATA_DIR)")
        return folder
    for folder in _default_local_dirs() if local_dirs is None else local_dirs:
        if is_complete(Path(folder)):
            return Path(folder)
    return download_benchmark(download_to or DEFAULT_DOWNLOAD_DIR, base_url=base_url)


def download_benchmark(
    dest: Path, base_url: str | None = None, names: Sequence[str] | None = None, timeout_s: float = 60.0
) -> Path:
    """Download the benchmark files (all, or `names` such as "atsa/rest14/test.json") into `dest`, verifying
    their SHA-256 digests against benchmark/checksums.json.

    Files are staged in a temporary folder beside `dest` and moved in only when all of them verified, so a failed
    or tampered download leaves nothing behind.
    """
    import httpx

    base_url = (base_url or raw_base_url()).rstrip("/")
    wanted = list(checksums()["files"] if names is None else names)
    unknown = [name for name in wanted if name not in checksums()["files"]]
    if unknown:
        raise ValueError(f"no pinned digest for {unknown}; known files are in {CHECKSUMS_PATH}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-download-", dir=dest.parent))
    try:
        transport = httpx.HTTPTransport(retries=3)  # retries connection failures only
        with httpx.Client(transport=transport, timeout=timeout_s, follow_redirects=True) as client:
            for name in wanted:
                expected = checksums()["files"][name]
                url = f"{base_url}/{name}"
                try:
                    response = client.get(url)
                except httpx.HTTPError as error:
                    raise InputError(url, None, f"download failed ({type(error).__name__}: {error}); nothing was "
                                     "kept. Put the benchmark in ./data/fsa_datasets or pass --data-dir") from None
                if response.status_code != 200:
                    raise InputError(url, None, f"download failed (HTTP {response.status_code}); nothing was kept. "
                                     "Put the benchmark in ./data/fsa_datasets or pass --data-dir")
                digest = hashlib.sha256(response.content).hexdigest()
                if digest != expected["sha256"]:
                    raise InputError(url, None, f"SHA-256 mismatch: expected {expected['sha256']}, got {digest}; "
                                     "nothing was kept")
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(response.content)
        for name in wanted:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def read_benchmark_file(path: Path) -> list[dict[str, Any]]:
    """Read one benchmark JSON file (UTF-8 with or without BOM) and check the fields scoring relies on."""
    path = Path(path)
    try:
        sentences = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    except UnicodeDecodeError as error:
        raise InputError(path, f"byte {error.start}", f"not UTF-8 text ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise InputError(path, f"line {error.lineno} column {error.colno}", f"not valid JSON ({error.msg})") from None
    except RecursionError:
        raise InputError(path, None, "JSON nested too deeply to be benchmark sentences") from None
    if not isinstance(sentences, list):
        raise InputError(path, None, "expected a JSON array of sentences")
    for index, sentence in enumerate(sentences):
        where = f"item {index}" + (f" (ID={sentence.get('ID')})" if isinstance(sentence, dict) else "")
        if not isinstance(sentence, dict) or not isinstance(sentence.get("sentence"), str):
            raise InputError(path, where, 'expected an object with a "sentence" string')
        if not isinstance(sentence.get("aspects", []), list):
            raise InputError(path, where, '"aspects" must be a list')
        for number, aspect in enumerate(sentence.get("aspects", []), start=1):
            if not isinstance(aspect, dict) or not isinstance(aspect.get("polarity"), str):
                raise InputError(path, where, 'every aspect needs a "polarity" string')
            for field in ("from", "to"):
                if not _is_offset(aspect.get(field)):
                    raise InputError(path, f"{where} aspect {number}", f'"{field}" is {aspect.get(field)!r}, not a '
                                     "character offset (a non-negative integer, as a number or a string, or null)")
            for field in ("target", "category"):
                if not isinstance(aspect.get(field), (str, type(None))):
                    raise InputError(path, f"{where} aspect {number}", f'"{field}" must be a string or null, got '
                                     f"{type(aspect[field]).__name__}")
    return sentences


def _is_offset(value: Any) -> bool:
    """Offsets are strings in the released files and ints in others; null or "" when the target is implicit."""
    if value is None or value == "":
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and value.isascii() and value.isdigit()


# The field each task's gold pairs are built from (benchmark/targets.py).
TASK_FIELDS = {"atsa": "target", "acsa": "category"}


def check_gold_for_task(sentences: Sequence[Mapping[str, Any]], task: str, path: str | Path) -> None:
    """Gold read for `task` must carry that task's field somewhere: ATSA gold has no categories, and scoring it
    as ACSA would silently give F1 = 0."""
    field = TASK_FIELDS[task]
    aspects = [aspect for sentence in sentences for aspect in sentence.get("aspects") or []]
    if aspects and not any(aspect.get(field) not in (None, "", "NULL", "null") for aspect in aspects):
        other = next(name for name in TASKS if name != task)
        raise InputError(path, None, f'no aspect has a "{field}", which --task {task} scores; this looks like '
                         f"{other.upper()} gold (use --task {other})")


def split_paths(task: str, dataset: str, split: str, data_dir: Path | None = None) -> list[Path]:
    """The file(s) making up a split; `test` is test.json followed by hard_test.json."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {list(TASKS)}")
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
    folder = resolve_data_dir(data_dir) / task / dataset
    paths = [folder / f"{name}.json" for name in SPLIT_FILES[split]]
    for path in paths:
        if not path.is_file():
            known = [name for name in DATASETS if name.startswith(f"{task}/")]
            raise InputError(path, None, f"benchmark file not found (known {task} datasets: {known})")
    return paths


def load_sentences(task: str, dataset: str, split: str, data_dir: Path | None = None) -> list[dict[str, Any]]:
    """Raw benchmark sentences (the JSON schema of ../shared/README.md); split ∈ train, dev, test, hard_test."""
    sentences: list[dict[str, Any]] = []
    for path in split_paths(task, dataset, split, data_dir):
        sentences.extend(read_benchmark_file(path))
    return sentences


def features() -> datasets.Features:
    """Explicit schema: the raw files mix string / int / null offsets and string / list opinion words."""
    from datasets import Features, List, Value

    aspect = {
        "from": Value("string"),
        "to": Value("string"),
        "target": Value("string"),
        "category": Value("string"),
        "polarity": Value("string"),
        "opinion_words": List(Value("string")),
    }
    return Features({"id": Value("string"), "sentence": Value("string"), "aspects": List(aspect),
                     "target": Value("string")})


def _opinion_words(value: Any) -> list[str]:
    """Opinion words come as a string, null, a list of strings or a list of {from, to, opinion}."""
    if not value:
        return []
    if isinstance(value, str):
        return [value]
    return [item["opinion"] if isinstance(item, dict) else str(item) for item in value]


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def to_row(sentence: Mapping[str, Any], task: str) -> dict[str, Any]:
    """One benchmark sentence as a row of `features()`, with its linearised target."""
    aspects = [
        {
            "from": _optional_str(aspect.get("from")),
            "to": _optional_str(aspect.get("to")),
            "target": _optional_str(aspect.get("target")),
            "category": _optional_str(aspect.get("category")),
            "polarity": aspect["polarity"],
            "opinion_words": _opinion_words(aspect.get("opinion_words")),
        }
        for aspect in sentence.get("aspects") or []
    ]
    return {"id": str(sentence.get("ID", "")), "sentence": sentence["sentence"], "aspects": aspects,
            "target": linearise(sentence, task)}


def load_split(task: str, dataset: str, split: str, data_dir: Path | None = None) -> datasets.Dataset:
    """A benchmark split as an HF dataset with columns id, sentence, aspects, target (the linearised target)."""
    from datasets import Dataset

    rows = [to_row(sentence, task) for sentence in load_sentences(task, dataset, split, data_dir)]
    return Dataset.from_list(rows, features=features())


def auxiliary_train(task: str, dataset: str, auxiliary: list[str], data: DataConfig,
                    held_out: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(task, sentence) of the auxiliary datasets' train splits (finetune.auxiliary_datasets), without
    `task/dataset` itself and without any sentence whose text is in `held_out` (the run's dev and test: the
    SemEval restaurant and laptop sets share sentences across years, e.g. 209 of rest16's train are rest14 dev)."""
    unseen = {sentence["sentence"].strip().lower() for sentence in held_out}
    pairs = []
    for name in auxiliary:
        if name == f"{task}/{dataset}":
            continue
        aux_task, aux_dataset = name.split("/")
        sentences = load_sentences(aux_task, aux_dataset, "train", data.data_dir)[:data.max_train_sentences]
        pairs.extend((aux_task, s) for s in sentences if s["sentence"].strip().lower() not in unseen)
    return pairs


def load_task_data(task: str, dataset: str, data: DataConfig) -> dict[str, list[dict[str, Any]]]:
    """train / dev / test sentences, each cut to the first N when DataConfig asks for a subsample."""
    limits = {"train": data.max_train_sentences, "dev": data.max_dev_sentences, "test": data.max_test_sentences}
    splits = {}
    for split, limit in limits.items():
        sentences = load_sentences(task, dataset, split, data.data_dir)
        splits[split] = sentences[:limit] if limit is not None else sentences
    if not splits["train"]:
        raise InputError(f"{task}/{dataset}", "train", "the training split is empty")
    if not splits["dev"]:
        raise InputError(f"{task}/{dataset}", "dev",
                         "the dev split is empty: no best-dev checkpoint possible")
    return splits
