"""The corpus tokenized once, on disk: memory-mapped Arrow that training reads batch by batch.

`datasets.map` writes the token ids and their lengths beside each other; the result is saved under a folder
named by the digests of the corpus, the tokenizer and the truncation lengths, so a second run (or another
process of the same run) opens it instead of tokenizing again. Token ids are stored as int32. Reading a batch touches only its rows, so the
training process's memory does not grow with the corpus (tests and `fsa-distill bench scale` check it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from fsa_distill.core.digests import sha256_file, sha256_json, sha256_tree
from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_dir
from fsa_distill.core.progress import counting_rows
from fsa_distill.models.student.load import TOKENIZER_FILES

MAP_BATCH = 1000  # texts per tokenizer call inside datasets.map
TOKENS_FILE = "tokens.arrow"
TOKENIZER_DIGEST_FILES = (*TOKENIZER_FILES, "special_tokens_map.json", "added_tokens.json")


def tokenizer_digest(model_dir: Path) -> str:
    """Digest of the tokenizer files of a student folder (the weights do not change the token ids)."""
    files = {name: sha256_file(Path(model_dir) / name) for name in TOKENIZER_DIGEST_FILES
             if (Path(model_dir) / name).is_file()}
    if not files:
        raise InputError(model_dir, None, "no tokenizer files (tokenizer.json / spiece.model)")
    return sha256_json(files)


def corpus_digest(corpus_dir: Path) -> str:
    """The corpus stage's content digest (corpus_digest.txt), else a digest of the folder's files."""
    marker = Path(corpus_dir) / "corpus_digest.txt"
    return marker.read_text(encoding="utf-8").strip() if marker.exists() else sha256_tree(corpus_dir)


def _tokenize(tokenizer: Any, max_source: int, max_target: int):
    def tokenize(rows: dict[str, list[str]]) -> dict[str, list[Any]]:
        source = tokenizer(rows["source"], max_length=max_source, truncation=True)["input_ids"]
        target = tokenizer(rows["target"], max_length=max_target, truncation=True)["input_ids"]
        return {"input_ids": source, "labels": target, "source_length": [len(ids) for ids in source],
                "target_length": [len(ids) for ids in target]}

    return tokenize


def _features() -> Any:
    from datasets import Features, List, Value

    # int32 ids: half the bytes of datasets' default int64, so half the pages to write and to read back
    return Features({"input_ids": List(Value("int32")), "labels": List(Value("int32")),
                     "source_length": Value("int32"), "target_length": Value("int32")})


def tokenized_split(corpus_dir: Path, split: str, tokenizer: Any, tokenizer_key: str, max_source: int,
                    max_target: int, cache_root: Path, limit: int | None = None, build: bool = True) -> Any:
    """The split's (input_ids, labels, source_length, target_length) as a memory-mapped `datasets.Dataset`.

    Built by `datasets.map` straight into `cache_root/<key>/<split>/tokens.arrow` when absent and opened with
    `Dataset.from_file`: no `save_to_disk` copy, whose read-back would bring every page of the tokenized corpus
    into this process's resident set (`fsa-distill bench scale`). `build=False` only opens it, for processes that
    wait for rank 0 to build it; an absent split gives an empty dataset. `limit` keeps the first N rows (the
    validation subset).
    """
    from datasets import Dataset, load_from_disk
    from datasets.arrow_writer import ArrowWriter

    key = sha256_json({"corpus": corpus_digest(corpus_dir), "tokenizer": tokenizer_key, "max_source": max_source,
                       "max_target": max_target, "limit": limit, "layout": "tokens.arrow/int32"})[:24]
    folder = Path(cache_root) / key / split
    if not folder.exists() and build:
        try:
            corpus = load_from_disk(str(corpus_dir))
        except Exception as error:  # noqa: BLE001
            raise InputError(corpus_dir, None, f"not a saved Hugging Face dataset: {error}") from None
        with atomic_dir(folder) as tmp:
            if split in corpus and len(corpus[split]) > 0:
                rows = corpus[split]
                if limit is not None:
                    rows = rows.select(range(min(limit, len(rows))))
                with tqdm(total=len(rows), desc=f"tokenize {split}", unit="row") as bar:
                    rows.map(counting_rows(_tokenize(tokenizer, max_source, max_target), bar), batched=True,
                             batch_size=MAP_BATCH, remove_columns=rows.column_names, features=_features(),
                             cache_file_name=str(tmp / TOKENS_FILE), new_fingerprint=key)
            else:
                with ArrowWriter(features=_features(), path=str(tmp / TOKENS_FILE)) as writer:
                    writer.finalize()
    return Dataset.from_file(str(folder / TOKENS_FILE))


def length_keys(data: Any) -> np.ndarray:
    """(target length, source length) per row, as an (N, 2) int array read from the length columns."""
    if len(data) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    table = data.with_format("numpy", columns=["target_length", "source_length"])
    return np.stack([table["target_length"], table["source_length"]], axis=1).astype(np.int64)


def rows(data: Any, indices: list[int]) -> list[tuple[list[int], list[int]]]:
    """The (source ids, target ids) of the given rows, read from the memory map."""
    picked = data[indices]
    return list(zip(picked["input_ids"], picked["labels"], strict=True))
