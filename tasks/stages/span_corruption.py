"""Arm B of the study: the same reviews with no teacher — T5's span-corruption denoising objective.

Each review becomes (corrupted review → the dropped spans), as in T5 pretraining: about 15% of the words, in
spans of mean length 3, are replaced by sentinels `<extra_id_0>`, `<extra_id_1>`, … in the source, and the
target lists each sentinel followed by the words it replaced, closed by one more sentinel. Words rather than
sub-word tokens are dropped (whole-word masking), so the result is plain text that any tokenizer with the
sentinels reads.

Hand-written because transformers ships no span-corruption function in the library (only the Flax example
script `run_t5_mlm_flax.py` has one, on token ids of a fixed length); this is the same noise process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_tree
from fsa_distill.models.student.sentinels import N_SENTINELS
from fsa_distill.tasks.stages.keys import Placement, StageSettings
from fsa_distill.tasks.stages.records import Reviews, StageResult
from fsa_distill.tasks.stages.stage_task import current_stage_key, stage_dir, stage_task_options

DENOISING_COPIES = 2  # differently corrupted versions per review: as many examples as arm C's two prompts

NOISE_DENSITY = 0.15
MEAN_SPAN_LENGTH = 3.0
PROMPT_NAME = "span-corruption"


def sentinel(index: int) -> str:
    return f"<extra_id_{index}>"


def span_lengths(total: int, n_spans: int, rng: np.random.Generator) -> list[int]:
    """`total` items split into `n_spans` non-empty runs at random (T5's random segmentation)."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=n_spans - 1, replace=False)) if n_spans > 1 else []
    bounds = [0, *[int(c) for c in cuts], total]
    return [bounds[i + 1] - bounds[i] for i in range(n_spans)]


def kept_lengths(total: int, n_spans: int, rng: np.random.Generator) -> list[int]:
    """`total` kept words around `n_spans` spans: n_spans + 1 runs, the inner ones non-empty (so spans never
    touch), the first and last possibly empty (so a span can open or close the review, not only close it)."""
    free = total - (n_spans - 1)
    cuts = np.sort(rng.integers(0, free + 1, size=n_spans))
    runs = np.diff(np.concatenate([[0], cuts, [free]])).tolist()
    return [run + (0 < index < n_spans) for index, run in enumerate(runs)]


def corrupt(text: str, rng: np.random.Generator, max_spans: int) -> tuple[str, str]:
    """(source with sentinels, target of sentinel + dropped words). Texts under two words stay whole."""
    words = text.split()
    if len(words) < 2:
        return text, sentinel(0)
    n_noise = min(max(1, round(len(words) * NOISE_DENSITY)), len(words) - 1)
    n_spans = max(1, min(round(n_noise / MEAN_SPAN_LENGTH), n_noise, len(words) - n_noise + 1, max_spans))
    noise, keep = span_lengths(n_noise, n_spans, rng), kept_lengths(len(words) - n_noise, n_spans, rng)
    source, target, position = [], [], 0
    for index, dropped in enumerate(noise):  # a kept run, then a span; the last kept run closes the text
        source += words[position:position + keep[index]]
        position += keep[index]
        source.append(sentinel(index))
        target += [sentinel(index), *words[position:position + dropped]]
        position += dropped
    source += words[position:]
    target.append(sentinel(n_spans))
    return " ".join(source), " ".join(target)


def denoising_rows(reviews: list[dict[str, str]], copies: int, seed: int, max_spans: int) -> list[dict[str, Any]]:
    """Rows in the generate stage's dataset layout (review = corrupted source, response = target), `copies`
    differently corrupted versions per review, so the corpus stage turns them into a corpus like any other."""
    rng = np.random.default_rng(seed)
    rows = []
    for review in reviews:
        for _ in range(copies):
            source, target = corrupt(review["text"], rng, max_spans)
            rows.append({"review_id": review["id"], "review": source, "prompt": PROMPT_NAME, "response": target,
                         "prompt_version": "1", "teacher": "none", "valid": True, "reject_reason": "",
                         "n_tokens": len(target.split())})
    return rows


def write_denoising_dataset(reviews: list[dict[str, str]], out_dir: Path, copies: int, seed: int,
                            max_spans: int) -> Path:
    """Save the rows as a generate-stage dataset at `out_dir` (with an empty `rejected/`)."""
    from datasets import Dataset

    from fsa_distill.core.files import atomic_dir
    from fsa_distill.tasks.stages.generate import generation_features

    features = generation_features()
    rows = denoising_rows(reviews, copies, seed, max_spans)
    with atomic_dir(Path(out_dir)) as tmp:
        Dataset.from_list(rows, features=features).save_to_disk(str(tmp))
        empty = Dataset.from_dict({name: [] for name in features}, features=features)
        empty.save_to_disk(str(tmp / "rejected"), num_shards=1)  # nothing is rejected: no teacher
    return Path(out_dir)


class DenoisingSettings(StageSettings):
    """What arm B's denoising data reads: the corpus seed that draws the corrupted spans."""

    seed: int

    @classmethod
    def of(cls, config: DistillConfig) -> DenoisingSettings:
        return cls(seed=config.corpus.seed)


class DenoisingResult(StageResult):
    """Arm B's span-corruption pairs, in the generate stage's dataset layout."""

    dataset_dir: Path
    rows: int


@task(**stage_task_options("denoising-data", timeout_hours=1))
def denoising_stage(reviews: Reviews, settings: DenoisingSettings, placement: Placement) -> DenoisingResult:
    """Arm B's span-corruption pairs, saved in the generate stage's layout."""
    rows = [json.loads(line) for line in Path(reviews.path).read_text(encoding="utf-8").splitlines()]
    key = current_stage_key()
    out_dir = stage_dir(placement, "denoising-data", key) / "dataset"
    write_denoising_dataset(rows, out_dir, DENOISING_COPIES, settings.seed, N_SENTINELS - 1)
    return DenoisingResult(dataset_dir=out_dir, digest=sha256_tree(out_dir), rows=len(rows) * DENOISING_COPIES,
                           key=key)
