"""Teacher generations → the pretraining corpus: an HF DatasetDict (train / validation) of source → target.

source = the review, target = the teacher's response, both with newlines written as `[NL]` (the paper's
convention). Only responses the generate stage marked valid are kept, exact duplicate pairs are dropped, and
the split is a hash of the review id, so adding reviews never moves an old review between splits. A held-out
file of real teacher responses (e.g. mixtral_500.jsonl), when given, becomes the validation split instead.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fsa_distill.core.config import CorpusConfig
from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_dir
from fsa_distill.models.student.text import to_model_text

COLUMNS = ("id", "source", "target", "prompt")


def _in_dev_split(review_id: str, dev_fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{review_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < dev_fraction


def _read_generations(dataset_dir: Path) -> tuple[list[dict[str, str]], int]:
    """Valid (review_id, review, response, prompt) rows of one generate-stage dataset, and how many were invalid."""
    from datasets import Dataset, DatasetDict, load_from_disk

    if not dataset_dir.exists():
        raise InputError(dataset_dir, None, "generation dataset folder not found")
    try:
        loaded = load_from_disk(str(dataset_dir))
    except Exception as error:  # noqa: BLE001 - anything unreadable is a bad input folder
        raise InputError(dataset_dir, None, f"not a saved Hugging Face dataset: {error}") from None
    if isinstance(loaded, DatasetDict):
        loaded = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
    assert isinstance(loaded, Dataset)
    missing = {"review_id", "review", "response"} - set(loaded.column_names)
    if missing:
        raise InputError(dataset_dir, None, f"missing column(s) {sorted(missing)}; has {loaded.column_names}")
    rows, invalid = [], 0
    for row in loaded:
        if not row.get("valid", True) or not (row["response"] or "").strip():
            invalid += 1
            continue
        rows.append({
            "id": str(row["review_id"]),
            "source": to_model_text(row["review"].strip()),
            "target": to_model_text(row["response"].strip()),
            "prompt": str(row.get("prompt") or ""),
        })
    return rows, invalid


def read_heldout(path: Path) -> list[dict[str, str]]:
    """Real teacher responses from a JSONL file with `Text` and `mixtral_response` (or `review`/`response`)."""
    rows = []
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise InputError(path, None, "held-out teacher file not found") from None
    except UnicodeDecodeError as error:
        raise InputError(path, None, f"not UTF-8 text: {error}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(path, f"line {number}", f"not valid JSON: {error.msg}") from None
        review = record.get("Text", record.get("review"))
        response = record.get("mixtral_response", record.get("response"))
        if not isinstance(review, str) or not isinstance(response, str):
            raise InputError(path, f"line {number}", "needs string fields Text and mixtral_response")
        if response.strip():
            rows.append({"id": str(record.get("ID", number)), "source": to_model_text(review.strip()),
                         "target": to_model_text(response.strip()), "prompt": "heldout"})
    if not rows:
        raise InputError(path, None, "no held-out responses in the file")
    return rows


def _dedup(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in rows:
        key = (row["source"], row["target"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def corpus_digest(train: list[dict[str, str]], validation: list[dict[str, str]]) -> str:
    """Content digest of both splits (order-sensitive, as the training order depends on it)."""
    hasher = hashlib.sha256()
    for split, rows in (("train", train), ("validation", validation)):
        for row in rows:
            hasher.update(json.dumps([split, row["id"], row["source"], row["target"]], ensure_ascii=False).encode())
    return hasher.hexdigest()


def build_corpus(
    generation_dataset_dirs: list[Path], out_dir: Path, cfg: CorpusConfig, heldout_file: Path | None = None
) -> dict[str, Any]:
    """Write the corpus DatasetDict at `out_dir`; return dataset_dir, n_train, n_validation, digest, counts."""
    from datasets import Dataset, DatasetDict, Features, Value

    rows, invalid = [], 0
    for dataset_dir in generation_dataset_dirs:
        found, bad = _read_generations(Path(dataset_dir))
        rows += found
        invalid += bad
    unique = _dedup(rows)
    heldout_file = heldout_file if heldout_file is not None else cfg.heldout_file
    if heldout_file is not None:
        train, validation = unique, _dedup(read_heldout(Path(heldout_file)))
    else:
        train = [row for row in unique if not _in_dev_split(row["id"], cfg.dev_fraction, cfg.seed)]
        validation = [row for row in unique if _in_dev_split(row["id"], cfg.dev_fraction, cfg.seed)]
    if not train:
        where = ", ".join(str(path) for path in generation_dataset_dirs) or None
        raise InputError(where, None, f"no valid teacher responses for the training split "
                                      f"({len(rows)} valid, {invalid} invalid)")
    features = Features({name: Value("string") for name in COLUMNS})
    corpus = DatasetDict({"train": Dataset.from_list(train, features=features)})
    if validation:  # datasets 5 cannot reload an empty saved split, so an empty one is left out
        corpus["validation"] = Dataset.from_list(validation, features=features)
    digest = corpus_digest(train, validation)
    with atomic_dir(Path(out_dir)) as tmp:
        corpus.save_to_disk(str(tmp))
        (tmp / "corpus_digest.txt").write_text(digest + "\n", encoding="utf-8")
    return {
        "dataset_dir": str(out_dir), "n_train": len(train), "n_validation": len(validation), "digest": digest,
        "n_invalid": invalid, "n_duplicates": len(rows) - len(unique),
    }
