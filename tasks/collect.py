"""Collect the reviews the teacher will analyse and rewrite: benchmark training sentences plus user corpora.

The output is one JSONL file of `{"id", "text"}` with duplicate texts removed (first occurrence wins), and its
content digest, which keys the generation stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fsa_distill.benchmark.data import load_sentences
from fsa_distill.benchmark.importers import chars_for_tokens, count_cut, read_review_corpus
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


def unique_reviews(candidates: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Stripped, non-empty reviews with duplicate texts dropped (the first occurrence keeps its id)."""
    seen: set[str] = set()
    unique = []
    for review in candidates:
        text = review["text"].strip()
        if text and text not in seen:
            seen.add(text)
            unique.append({"id": str(review["id"]), "text": text})
    return unique


def collect_reviews(config: DistillConfig, out_dir: Path) -> dict[str, Any]:
    """Write `<out_dir>/reviews.jsonl` atomically; returns {path, digest, n_reviews, sources}."""
    sources: dict[str, int] = {}
    candidates: list[dict[str, str]] = []
    if config.corpus.include_benchmark_sentences:
        benchmark_reviews = _benchmark_reviews(config)
        sources["benchmark"] = len(benchmark_reviews)
        candidates.extend(benchmark_reviews)
    for review_file in config.corpus.review_files:
        file_reviews = read_review_corpus(
            Path(review_file), max_chars=chars_for_tokens(config.generation.max_input_tokens))
        sources[str(review_file)] = len(file_reviews)
        if count_cut(file_reviews):
            sources[f"{review_file} (cut to the input budget)"] = count_cut(file_reviews)
        candidates.extend(file_reviews)

    unique = unique_reviews(candidates)

    path = Path(out_dir) / "reviews.jsonl"
    with atomic_file(path) as handle:
        for review in unique:
            handle.write(json.dumps(review, ensure_ascii=False) + "\n")
    return {"path": str(path), "digest": sha256_file(path), "n_reviews": len(unique), "sources": sources}
