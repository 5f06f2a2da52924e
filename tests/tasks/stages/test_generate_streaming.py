"""Bounded memory in the generate and corpus stages: reviews read once as a stream, jobs planned in blocks on
disk, the dataset and its digest written block by block, the corpus built with `datasets` on disk; and the
generation side of `fsa-distill bench scale`."""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from datasets import Dataset, load_from_disk

from fsa_distill.core.config import CorpusConfig, DistillConfig
from fsa_distill.tasks.stages import generate
from fsa_distill.tasks.stages.corpus import build_corpus
from fsa_distill.tasks.stages.generate import GenerateSettings, PlannedQueue, generate_responses
from fsa_distill.tasks.store.answers import SQLiteAnswerStore
from tests.teacher_fixtures import FakeTeacher, make_reviews


def _config(tmp_path: Path) -> DistillConfig:
    config = DistillConfig(work_dir=tmp_path / "work")
    config.generation.batch_size = 4
    return config


def _stream(reviews: list[dict[str, str]], pulled: list[int]) -> Iterator[dict[str, str]]:
    for review in reviews:
        pulled.append(1)
        yield review


def test_reviews_stream_through_planned_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of 3 reviews over 11 (one empty, one text repeated in a later block): the generator is read once,
    every job is answered, the repeated text is stored once, and the datasets keep the reviews' order."""
    monkeypatch.setattr(generate, "PLAN_BLOCK", 3)
    reviews = make_reviews(9)
    reviews.insert(4, {"id": "blank", "text": "   "})
    reviews.append({"id": "again", "text": reviews[0]["text"]})  # block 4 repeats block 1's first review
    pulled: list[int] = []
    teacher = FakeTeacher()
    stats = generate_responses(_stream(reviews, pulled), GenerateSettings.of(_config(tmp_path)),
                               tmp_path / "out", teacher=teacher,
                               progress=False, work_dir=tmp_path / "work")
    assert len(pulled) == 11
    assert (stats["reviews"], stats["reviews_used"], stats["skipped_empty"]) == (11, 10, 1)
    assert stats["requests"] == 20 and stats["rows"] == 20 and stats["generated"] == teacher.n_requests
    # planning precedes generation, so the repeated text is pending in its own block too: asked twice, stored once
    assert teacher.n_requests == 20
    with SQLiteAnswerStore(Path(stats["cache_path"])) as store:
        assert store.counts()["accepted"] == 18
    accepted = load_from_disk(str(tmp_path / "out"))
    expected_ids = [r["id"] for r in reviews if r["text"].strip()]
    assert accepted["review_id"] == [rid for rid in expected_ids for _ in ("analysis", "rewrite")]
    assert accepted["prompt"] == ["analysis", "rewrite"] * 10
    assert not list((tmp_path).glob(".plan-*")) and not list(tmp_path.glob(".rows-*")), "temporary files left"

    again = FakeTeacher()
    rerun = generate_responses(_stream(reviews, []), GenerateSettings.of(_config(tmp_path)),
                               tmp_path / "out2", teacher=again,
                               progress=False, work_dir=tmp_path / "work")
    assert again.n_requests == 0 and rerun["cached"] == rerun["unique_requests"]


def test_digest_is_computed_while_writing(tmp_path: Path) -> None:
    """The stage's digest is the accepted (review id, prompt, response) rows in plan order: recomputed from the
    written dataset it matches, and an all-cached rerun gives the same digest."""
    config = _config(tmp_path)
    first = generate_responses(make_reviews(7), GenerateSettings.of(config), tmp_path / "out",
                               teacher=FakeTeacher(), progress=False, work_dir=config.work_dir)
    dataset = load_from_disk(str(tmp_path / "out"))
    hasher = hashlib.sha256()
    for row in dataset:
        hasher.update(json.dumps([row["review_id"], row["prompt"], row["response"]], ensure_ascii=False).encode()
                      + b"\n")
    assert first["digest"] == hasher.hexdigest()
    rerun = generate_responses(make_reviews(7), GenerateSettings.of(config), tmp_path / "out",
                               teacher=FakeTeacher(), progress=False, work_dir=config.work_dir)
    assert rerun["generated"] == 0 and rerun["digest"] == first["digest"]
    changed = generate_responses(make_reviews(8), GenerateSettings.of(config), tmp_path / "out",
                                 teacher=FakeTeacher(), progress=False, work_dir=config.work_dir)
    assert changed["digest"] != first["digest"]


def test_planned_queue_refills_from_the_plan_and_keeps_reasks() -> None:
    """The ray stream's queue sees a few planned jobs at a time, in order, and re-asks appended on the right."""

    class Job:
        def __init__(self, n: int) -> None:
            self.request = f"request-{n}"

    planned = iter([Job(n) for n in range(7)])
    queue = PlannedQueue(planned, low_water=2)
    assert len(queue) == 2  # two planned jobs pulled, not seven
    taken = [queue.popleft()[1] for _ in range(len(queue))]
    queue.append(("reask", "reask-0"))
    while queue:
        taken.append(queue.popleft()[1])
    assert taken == ["request-0", "request-1", "reask-0", "request-2", "request-3", "request-4", "request-5",
                     "request-6"]
    assert isinstance(queue, deque) and not queue


def test_corpus_from_two_generation_datasets_dedups_on_disk(tmp_path: Path) -> None:
    """Invalid and blank answers dropped, a pair repeated across the two datasets kept once (first wins), the
    digest the row-by-row formula, and no cache files left in the generation datasets' folders."""
    rows = [{"review_id": f"r{i}", "review": f"Review {i}.", "prompt": "analysis", "response": f"Answer {i}\nok",
             "valid": True} for i in range(6)]
    rows[2]["valid"] = False
    rows[3]["response"] = "  "
    first, second = tmp_path / "gen1", tmp_path / "gen2"
    Dataset.from_list(rows[:4]).save_to_disk(str(first))
    Dataset.from_list([{**rows[1], "review_id": "dup"}, *rows[4:]]).save_to_disk(str(second))
    files_before = sorted(p.name for p in first.iterdir())
    result = build_corpus([first, second], tmp_path / "corpus", CorpusConfig(dev_fraction=0.0))
    corpus = load_from_disk(str(tmp_path / "corpus"))
    assert corpus["train"]["id"] == ["r0", "r1", "r4", "r5"]
    assert corpus["train"]["target"][0] == "Answer 0[NL]ok"
    assert (result["n_invalid"], result["n_duplicates"], result["n_train"]) == (2, 1, 4)
    hasher = hashlib.sha256()
    for row in corpus["train"]:
        hasher.update(json.dumps(["train", row["id"], row["source"], row["target"]], ensure_ascii=False).encode())
    assert result["digest"] == hasher.hexdigest()
    assert sorted(p.name for p in first.iterdir()) == files_before
    assert not list(tmp_path.glob(".corpus-*"))


def test_bench_scale_generation_part(tmp_path: Path) -> None:
    """The bench's generation side on a small N: every synthetic answer is accepted, stored, in the dataset
    and in the corpus, and the memory and timing figures are reported."""
    from fsa_distill.perf.bench_scale import run_scale_bench

    result = run_scale_bench(n_pairs=600, part="generation", work_dir=tmp_path, results_path=tmp_path / "s.json")
    generation = result["generation"]
    assert generation["answers"] == generation["rows"] == 600
    assert generation["corpus_train_pairs"] + generation["corpus_validation_pairs"] == 600
    assert 0 < generation["generation_peak_anonymous_rss_gib"] <= generation["generation_peak_rss_gib"] < 2
    assert generation["store_write_s"] > 0 and generation["dataset_build_s"] > 0
    assert json.loads((tmp_path / "s.json").read_text())["generation"]["answers"] == 600
