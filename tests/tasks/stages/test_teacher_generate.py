"""The generate stage on a fake teacher: per-answer cache, incremental runs, crash and resume, re-asks,
input hygiene, and the datasets it writes."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import traceback
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk

from fsa_distill.core.config import DistillConfig
from fsa_distill.models.teacher.base import GenerationRequest
from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses
from fsa_distill.tasks.store.answers import SQLiteAnswerStore, StoredAnswer
from tests.teacher_fixtures import FakeTeacher, answers_cached_so_far, kill_once_cached, make_reviews

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def make_config(tmp_path: Path, **generation: object) -> DistillConfig:
    config = DistillConfig(work_dir=tmp_path / "work")
    config.generation.batch_size = 4
    for key, value in generation.items():
        setattr(config.generation, key, value)
    return config


def test_second_run_is_all_cache_hits(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    reviews = make_reviews(10)
    first_teacher = FakeTeacher()
    first = generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out", teacher=first_teacher,
                               progress=False, work_dir=config.work_dir)
    assert first["generated"] == 20 and first["cached"] == 0 and first["rows"] == 20
    assert first_teacher.n_requests == 20

    again = FakeTeacher()
    second = generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out", teacher=again,
                                progress=False, work_dir=config.work_dir)
    assert again.n_requests == 0
    assert second["cached"] == 20 and second["generated"] == 0 and second["cache_hit_rate"] == 1.0
    assert second["rows"] == 20


def test_ten_percent_new_reviews_generate_only_those(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    generate_responses(make_reviews(30), GenerateSettings.of(config), tmp_path / "out",
                       teacher=FakeTeacher(), progress=False, work_dir=config.work_dir)
    grown = make_reviews(30) + make_reviews(3, start=30)  # 10% new
    teacher = FakeTeacher()
    stats = generate_responses(grown, GenerateSettings.of(config), tmp_path / "out", teacher=teacher,
                               progress=False, work_dir=config.work_dir)
    asked = {r.messages[0]["content"].rsplit("Review: ", 1)[-1].split()[0] for c in teacher.calls for r in c}
    assert asked == {"Pasta30", "Pasta31", "Pasta32"}
    assert teacher.n_requests == 6 and stats["cached"] == 60 and stats["generated"] == 6
    assert len(load_from_disk(stats["dataset_dir"])) == 66


def test_changed_prompt_set_or_sampling_is_a_cache_miss(tmp_path: Path) -> None:
    reviews = make_reviews(4)
    generate_responses(reviews, GenerateSettings.of(make_config(tmp_path)), tmp_path / "out",
                       teacher=FakeTeacher(), progress=False, work_dir=tmp_path / "work")
    hotter = FakeTeacher()
    generate_responses(reviews, GenerateSettings.of(make_config(tmp_path, temperature=0.5)), tmp_path / "o2",
                       teacher=hotter,
                       progress=False, work_dir=tmp_path / "work")
    assert hotter.n_requests == 8
    other_model = FakeTeacher(model_id="another-teacher")
    generate_responses(reviews, GenerateSettings.of(make_config(tmp_path)), tmp_path / "o3",
                       teacher=other_model, progress=False, work_dir=tmp_path / "work")
    assert other_model.n_requests == 8
    rewrite_only = FakeTeacher()
    generate_responses(reviews, GenerateSettings.of(make_config(tmp_path, prompts=["rewrite"])), tmp_path / "o4",
                       teacher=rewrite_only, progress=False, work_dir=tmp_path / "work")
    assert rewrite_only.n_requests == 0  # same rewrite answers as the first run


def test_crash_mid_run_keeps_finished_chunks(tmp_path: Path) -> None:
    config = make_config(tmp_path)  # 12 reviews x 2 prompts = 24 answers = 6 chunks of 4
    reviews = make_reviews(12)
    with pytest.raises(RuntimeError, match="on purpose"):
        generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out",
                           teacher=FakeTeacher(fail_after_calls=3),
                           progress=False, work_dir=config.work_dir)
    cache_path = config.work_dir / "cache" / "teacher_responses.sqlite"
    assert answers_cached_so_far(cache_path) == 12
    resumed = FakeTeacher()
    stats = generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out", teacher=resumed,
                               progress=False, work_dir=config.work_dir)
    assert resumed.n_requests == 12 and stats["cached"] == 12 and stats["rows"] == 24


def test_killed_process_resumes_where_it_stopped(tmp_path: Path) -> None:
    """A real crash: the generating process is SIGKILLed mid-run; committed chunks survive."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from fsa_distill.core.config import DistillConfig
        from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses
        from tests.teacher_fixtures import FakeTeacher, make_reviews
        config = DistillConfig(work_dir=Path({str(tmp_path / "work")!r}))
        config.generation.batch_size = 4
        generate_responses(make_reviews(40), GenerateSettings.of(config), Path({str(tmp_path / "out")!r}),
                           teacher=FakeTeacher(delay_s=0.3), progress=False, work_dir=config.work_dir)
    """))
    cache_path = tmp_path / "work" / "cache" / "teacher_responses.sqlite"
    process = subprocess.Popen([sys.executable, str(script)], cwd=PROJECT_ROOT,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    kill_once_cached(process, cache_path, at_least=8, timeout_s=60)
    done = answers_cached_so_far(cache_path)
    assert 8 <= done < 80 and done % 4 == 0  # whole chunks only
    resumed = FakeTeacher()
    stats = generate_responses(make_reviews(40), GenerateSettings.of(make_config(tmp_path)),
                               tmp_path / "out", teacher=resumed,
                               progress=False, work_dir=tmp_path / "work")
    assert resumed.n_requests == 80 - done and stats["rows"] == 80


def test_rejected_answers_are_reasked_once_and_kept_apart(tmp_path: Path) -> None:
    def answer(request: GenerationRequest) -> str | None:
        review = request.messages[0]["content"]
        if "Pasta0 " in review and request.seed == 0:
            return ""  # empty at first, fine when re-asked
        if "Pasta1 " in review and "Analyze" in review:
            return 'Opinion Target 1: "wireless adapter"\nAspect: "signal"\nSentiment: Negative\nReasoning: x'
        return None

    teacher = FakeTeacher(answer=answer)
    config = make_config(tmp_path)
    stats = generate_responses(make_reviews(4), GenerateSettings.of(config), tmp_path / "out",
                               teacher=teacher, progress=False, work_dir=config.work_dir)
    assert stats["reasked"] == 3 and stats["recovered"] == 2
    assert stats["rejected"] == 1 and stats["rejected_by_reason"] == {"target_not_in_review": 1}
    reasks = [r for call in teacher.calls for r in call if r.seed == 1]
    assert len(reasks) == 3 and all(r.temperature > 0 for r in reasks)
    accepted = load_from_disk(stats["dataset_dir"])
    rejected = load_from_disk(stats["rejected_dir"])
    assert len(accepted) == 7 and all(accepted["valid"])
    assert sorted(rejected["reject_reason"]) == ["empty", "empty", "target_not_in_review",
                                                 "target_not_in_review"]
    assert not any(rejected["valid"])
    # finally rejected answers are not asked again on the next run
    again = FakeTeacher(answer=answer)
    assert generate_responses(make_reviews(4), GenerateSettings.of(config), tmp_path / "out", teacher=again,
                              progress=False, work_dir=config.work_dir)["rejected"] == 1
    assert again.n_requests == 0


def test_bad_input_reviews_are_counted_not_fatal(tmp_path: Path) -> None:
    reviews = [
        {"id": "ok", "text": "Sushi was fresh and tasty."},
        {"id": "blank", "text": "   "},
        {"id": "none", "text": None},
        {"id": "bytes", "text": b"\xff\xfe not utf-8"},
        {"id": "surrogate", "text": "broken \udcff text"},
        {"id": "long", "text": "Noodles were great. " * 400},
    ]
    stats = generate_responses(reviews, GenerateSettings.of(make_config(tmp_path, max_input_tokens=64)),
                               tmp_path / "out",
                               teacher=FakeTeacher(), progress=False, work_dir=tmp_path / "work")
    assert stats["reviews"] == 6 and stats["reviews_used"] == 2
    assert stats["skipped_empty"] == 2 and stats["skipped_not_utf8"] == 2 and stats["truncated"] == 1
    rows = load_from_disk(stats["dataset_dir"])
    assert set(rows["review_id"]) == {"ok", "long"}
    assert max(len(text) for text in rows["review"]) <= 64 * 4


def test_dataset_schema_and_metrics_callback(tmp_path: Path) -> None:
    logged: list[tuple[dict, int | None]] = []
    stats = generate_responses(make_reviews(6), GenerateSettings.of(make_config(tmp_path)), tmp_path / "out",
                               teacher=FakeTeacher(), progress=False,
                               log_metrics=lambda metrics, step: logged.append((metrics, step)), work_dir=tmp_path / "work")
    rows = load_from_disk(stats["dataset_dir"])
    assert set(rows.column_names) >= {"review_id", "review", "prompt", "prompt_version", "response",
                                      "teacher", "valid", "reject_reason"}
    assert rows[0]["teacher"] == "fake-teacher" and rows[0]["prompt_version"] == "1"
    assert [step for _, step in logged] == [0, 1, 2, None]
    assert logged[-1][0]["cache_hit_rate"] == 0.0
    for key in ("reviews", "generated", "cached", "rejected", "tokens", "tokens_per_s"):
        assert key in stats


def test_two_writers_on_one_cache_do_not_collide(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    entries = [StoredAnswer(f"k{i}", "d", "rewrite", "1", "t", 0, 0, f"answer {i}", 2, "stop") for i in range(200)]
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            with SQLiteAnswerStore(path) as cache:
                for start in range(offset, 200, 10):
                    cache.record(entries[start : start + 10])
                cache.record(entries)  # the same keys again: ignored, never duplicated
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=write, args=(offset,)) for offset in (0, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with SQLiteAnswerStore(path) as cache:
        assert cache.counts()["accepted"] == 200
        assert cache.lookup(["k7"])["k7"].response == "answer 7"


def _open_fresh_caches(folder: str, n_files: int, barrier: Any) -> None:
    try:
        for index in range(n_files):
            barrier.wait(timeout=60)  # every process opens the same brand-new file at the same moment
            with SQLiteAnswerStore(Path(folder) / f"cache-{index}.sqlite") as cache:
                cache.record([StoredAnswer(f"k{os.getpid()}", "d", "rewrite", "1", "t", 0, 0, "answer", 1, "stop")])
    except BaseException:
        barrier.abort()  # the others stop waiting at once
        Path(folder, f"error-{os.getpid()}.txt").write_text(traceback.format_exc(), encoding="utf-8")
        raise


def test_processes_opening_a_new_cache_together_do_not_fail(tmp_path: Path) -> None:
    """Regression (CI): two runs creating the cache at once got "database is locked" from the WAL switch."""
    # spawn, not fork: forking the test process after earlier tests started threads (Prefect, torch) killed the
    # children before they ran a line (exit 1 in the full suite only).
    context = multiprocessing.get_context("spawn")
    n_processes, n_files = 4, 25
    barrier = context.Barrier(n_processes)
    workers = [
        context.Process(target=_open_fresh_caches, args=(str(tmp_path), n_files, barrier))
        for _ in range(n_processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    errors = "\n".join(path.read_text() for path in tmp_path.glob("error-*.txt"))
    assert [worker.exitcode for worker in workers] == [0] * n_processes, errors
    for index in range(n_files):
        with SQLiteAnswerStore(tmp_path / f"cache-{index}.sqlite") as cache:
            assert cache.counts()["accepted"] == n_processes
