"""Collect the reviews the teacher will analyse and rewrite: benchmark training sentences plus user corpora.

The output is one JSONL file of `{"id", "text"}` with duplicate texts removed (first occurrence wins), and its
content digest, which keys the generation stage. Review files are streamed through: the stage never holds the
corpus in memory.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fsa_distill.benchmark.data import load_sentences
from fsa_distill.benchmark.importers import chars_for_tokens, iter_review_corpus
from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_file
from fsa_distill.core.files import atomic_file


def _benchmark_reviews(config: DistillConfig) -> list[dict[str, str]]:
    reviews: list[dict[str, str]] = []
    for name in config.data.datasets:
        task, dataset = name.split("/")
        for sentence in load_sentences(task, dataset, "train", config.data.data_dir):
            reviews.append({"id": f"{name}:{sentence['ID']}", "text": sentence["sentence"]})
    limit = config.corpus.max_benchmark_reviews
    return reviews[:limit] if limit is not None else reviews


def unique_stream(candidates: Iterable[dict[str, Any]]) -> Iterator[dict[str, str]]:
    """Stripped, non-empty reviews with duplicate texts dropped (the first occurrence keeps its id), one at a
    time. It remembers a 16-byte digest per text rather than the text, so a corpus of millions of reviews is
    deduplicated in tens of megabytes."""
    seen: set[bytes] = set()
    for review in candidates:
        text = review["text"].strip()
        fingerprint = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if text and fingerprint not in seen:
            seen.add(fingerprint)
            yield {"id": str(review["id"]), "text": text}


def unique_reviews(candidates: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    return list(unique_stream(candidates))


def _counted(name: str, reviews: Iterable[dict[str, Any]], sources: dict[str, int]) -> Iterator[dict[str, Any]]:
    """Pass the reviews through, counting them (and the ones cut to the input budget) under `name`."""
    sources[name] = 0
    for review in reviews:
        sources[name] += 1
        if "cut_chars" in review:
            label = f"{name} (cut to the input budget)"
            sources[label] = sources.get(label, 0) + 1
        yield review


def collect_reviews(config: DistillConfig, out_dir: Path) -> dict[str, Any]:
    """Write `<out_dir>/reviews.jsonl` atomically, streaming; returns {path, digest, n_reviews, sources}."""
    sources: dict[str, int] = {}
    streams: list[Iterable[dict[str, Any]]] = []
    if config.corpus.include_benchmark_sentences:
        streams.append(_counted("benchmark", _benchmark_reviews(config), sources))
    budget_chars = chars_for_tokens(config.generation.max_input_tokens)
    for review_file in config.corpus.review_files:
        streams.append(_counted(str(review_file), iter_review_corpus(Path(review_file), max_chars=budget_chars),
                                sources))
    path = Path(out_dir) / "reviews.jsonl"
    n_reviews = 0
    with atomic_file(path) as handle:
        for review in unique_stream(itertools.chain.from_iterable(streams)):
            handle.write(json.dumps(review, ensure_ascii=False) + "\n")
            n_reviews += 1
    return {"path": str(path), "digest": sha256_file(path), "n_reviews": n_reviews, "sources": sources}
