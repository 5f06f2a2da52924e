"""Teacher generations → the pretraining corpus: an HF DatasetDict (train / validation) of source → target.

source = the review, target = the teacher's response, both with newlines written as `[NL]` (the paper's
convention). Only responses the generate stage marked valid are kept, exact duplicate pairs are dropped, and
the split is a hash of the review id, so adding reviews never moves an old review between splits. A held-out
file of real teacher responses (e.g. mixtral_500.jsonl), when given, becomes the validation split instead.
The generations are never loaded as Python objects: the stage works on `datasets` on disk.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from tqdm.auto import tqdm

from fsa_distill.core.config import CorpusConfig, DistillConfig
from fsa_distill.core.digests import sha256_file
from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_dir
from fsa_distill.core.progress import counting_rows
from fsa_distill.models.student.text import to_model_text
from fsa_distill.tasks.stages.keys import Placement, StageSettings
from fsa_distill.tasks.stages.records import StageResult
from fsa_distill.tasks.stages.stage_task import current_stage_key, stage_dir, stage_task_options


class CorpusSettings(StageSettings):
    """What building the pretraining corpus reads: its section of the config, and the held-out file's bytes."""

    corpus: CorpusConfig

    @classmethod
    def of(cls, config: DistillConfig) -> CorpusSettings:
        return cls(corpus=config.corpus)

    def content(self) -> str | None:
        """Replacing the held-out file's content under the same path must rebuild the corpus."""
        path = self.corpus.heldout_file
        return sha256_file(path) if path is not None and Path(path).is_file() else None


class CorpusResult(StageResult):
    dataset_dir: Path
    n_train: int
    n_validation: int
    n_invalid: int
    n_duplicates: int

COLUMNS = ("id", "source", "target", "prompt")


def _in_dev_split(review_id: str, dev_fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{review_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < dev_fraction


def _load_generations(dataset_dir: Path) -> Any:
    """One generate-stage dataset, memory-mapped, after checking its columns."""
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
    return loaded


def _to_pairs(rows: dict[str, list[Any]], dev_fraction: float, seed: int) -> dict[str, list[Any]]:
    """A batch of valid generation rows as corpus rows, with a 64-bit digest of each (source, target) pair
    for deduplication (a collision merely drops one pair in ~10^19) and the row's dev-split flag."""
    sources = [to_model_text(review.strip()) for review in rows["review"]]
    targets = [to_model_text(response.strip()) for response in rows["response"]]
    prompts = rows["prompt"] if "prompt" in rows else [""] * len(sources)
    return {
        "id": [str(review_id) for review_id in rows["review_id"]],
        "source": sources, "target": targets, "prompt": [str(prompt or "") for prompt in prompts],
        "pair_hash": [int.from_bytes(hashlib.blake2b(json.dumps([s, t]).encode(), digest_size=8).digest(), "big",
                                     signed=True) for s, t in zip(sources, targets, strict=True)],
        "dev": [_in_dev_split(str(review_id), dev_fraction, seed) for review_id in rows["review_id"]],
    }


def _is_valid(responses: list[str | None], valid: list[bool] | None = None) -> list[bool]:
    valid = valid if valid is not None else [True] * len(responses)
    return [bool(ok) and bool((response or "").strip()) for ok, response in zip(valid, responses, strict=True)]


def _first_of_each_pair(pairs: Any) -> np.ndarray:
    """Row indices of the first occurrence of each (source, target) digest, in order: a pyarrow group-by over
    one int64 column, so deduplicating millions of pairs takes tens of megabytes, not a set of strings."""
    import pyarrow as pa

    hashes = pairs.with_format("arrow", columns=["pair_hash"])[:]["pair_hash"]
    table = pa.table({"pair_hash": hashes, "row": pa.array(np.arange(len(hashes), dtype=np.int64))})
    first = table.group_by("pair_hash", use_threads=False).aggregate([("row", "min")])["row_min"]
    return np.sort(first.to_numpy())


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


def corpus_digest(splits: dict[str, Any]) -> str:
    """Content digest of both splits (order-sensitive, as the training order depends on it), read in batches."""
    hasher = hashlib.sha256()
    for split in ("train", "validation"):
        if split not in splits:
            continue
        for batch in splits[split].iter(batch_size=10_000):
            for row in zip(batch["id"], batch["source"], batch["target"], strict=True):
                hasher.update(json.dumps([split, *row], ensure_ascii=False).encode())
    return hasher.hexdigest()


def build_corpus(
    generation_dataset_dirs: list[Path], out_dir: Path, cfg: CorpusConfig, heldout_file: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the corpus DatasetDict at `out_dir`; return dataset_dir, n_train, n_validation, digest, counts.

    Every step is a `datasets` operation on memory-mapped Arrow (filter, map, select), with its cache files in
    a temporary folder beside `out_dir`, so the stage's memory does not grow with the corpus.
    """
    from datasets import Dataset, DatasetDict, Features, Value, concatenate_datasets

    features = Features({name: Value("string") for name in COLUMNS})
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".corpus-", dir=out_dir.parent) as temp:
        def cache(name: str) -> str:
            return str(Path(temp) / f"{name}.arrow")

        parts, n_rows = [], 0
        # One bar over both passes of every generation dataset: the answer check, then the pairs of the valid ones.
        with tqdm(total=0, desc="corpus", unit="row", disable=not progress) as bar:
            for index, dataset_dir in enumerate(generation_dataset_dirs):
                generations = _load_generations(Path(dataset_dir))
                n_rows += len(generations)
                bar.total += len(generations)
                checked = ["response", "valid"] if "valid" in generations.column_names else ["response"]
                valid = generations.filter(counting_rows(_is_valid, bar), batched=True, input_columns=checked,
                                           cache_file_name=cache(f"valid-{index}"),
                                           new_fingerprint=f"{generations._fingerprint}-valid")
                bar.total += len(valid)
                parts.append(valid.map(counting_rows(_to_pairs, bar), batched=True, remove_columns=valid.column_names,
                                       fn_kwargs={"dev_fraction": cfg.dev_fraction, "seed": cfg.seed},
                                       cache_file_name=cache(f"pairs-{index}"),
                                       new_fingerprint=f"{valid._fingerprint}-pairs"))
                del generations, valid  # unmap the generation dataset: its pages would count in this process's RSS
        pairs = concatenate_datasets(parts) if len(parts) > 1 else parts[0] if parts else None
        n_valid = len(pairs) if pairs is not None else 0
        unique = pairs.select(_first_of_each_pair(pairs)) if n_valid else None
        n_unique = len(unique) if unique is not None else 0
        heldout_file = heldout_file if heldout_file is not None else cfg.heldout_file
        splits: dict[str, Any] = {}
        if unique is not None and n_unique:
            in_dev = np.asarray(unique.with_format("numpy", columns=["dev"])[:]["dev"], dtype=bool)
            unique = unique.remove_columns(["pair_hash", "dev"])
            if heldout_file is not None:
                splits["train"] = unique
            else:
                splits["train"] = unique.select(np.flatnonzero(~in_dev))
                splits["validation"] = unique.select(np.flatnonzero(in_dev))
        if heldout_file is not None:
            splits["validation"] = Dataset.from_list(_dedup(read_heldout(Path(heldout_file))), features=features)
        if "train" not in splits or len(splits["train"]) == 0:
            where = ", ".join(str(path) for path in generation_dataset_dirs) or None
            raise InputError(where, None, f"no valid teacher responses for the training split "
                                          f"({n_valid} valid, {n_rows - n_valid} invalid)")
        if "validation" in splits and len(splits["validation"]) == 0:
            del splits["validation"]  # datasets 5 cannot reload an empty saved split, so an empty one is left out
        corpus = DatasetDict(splits)
        digest = corpus_digest(corpus)
        with atomic_dir(out_dir) as tmp:
            corpus.save_to_disk(str(tmp))
            (tmp / "corpus_digest.txt").write_text(digest + "\n", encoding="utf-8")
        n_train, n_validation = len(corpus["train"]), len(corpus["validation"]) if "validation" in corpus else 0
        del corpus, splits, unique, pairs, parts  # memory maps close before the temporary folder goes
    return {
        "dataset_dir": str(out_dir), "n_train": n_train, "n_validation": n_validation, "digest": digest,
        "n_invalid": n_rows - n_valid, "n_duplicates": n_valid - n_unique,
    }


def stored_corpus_digest(corpus_dir: Path) -> str:
    """The content digest a corpus folder was written with (its CorpusResult's digest); "" when it has none."""
    marker = Path(corpus_dir) / "corpus_digest.txt"
    return marker.read_text(encoding="utf-8").strip() if marker.exists() else ""


@task(**stage_task_options("corpus", timeout_hours=2))
def corpus_stage(generations: list[Any], settings: CorpusSettings, placement: Placement) -> CorpusResult:
    """Teacher answers (one or more generate-stage datasets) → review→answer HF dataset (dedup, splits, `[NL]`)."""
    key = current_stage_key()
    out_dir = stage_dir(placement, "corpus", key)
    result = build_corpus([Path(g.dataset_dir) for g in generations], out_dir, settings.corpus,
                          settings.corpus.heldout_file)
    return CorpusResult(**result, key=key)
