"""`generation.engine: ray` (slow): tiny random Llama replicas as Ray actors on a local Ray with 2 CPUs. The
same answers as the local engine under greedy decoding, a replica killed mid-run loses nothing and stores
nothing twice, a rerun asks nothing, and the replicas carry the run's reaper token."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from datasets import load_from_disk

from fsa_distill.core.config import DistillConfig, TeacherConfig
from fsa_distill.core.reaper import TOKENS_ENV, marked_processes
from fsa_distill.models.teacher.factory import build_teacher
from fsa_distill.models.teacher.ray_backend import RayTeacher
from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses
from fsa_distill.tasks.store.answers import SQLiteAnswerStore
from tests.teacher_fixtures import make_reviews

pytestmark = pytest.mark.slow

KV_CACHE_GIB = 0.1


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _config(tmp_path: Path, model: Path, max_new_tokens: int = 16) -> DistillConfig:
    config = DistillConfig(work_dir=tmp_path / "work")
    config.teacher = TeacherConfig(model=str(model), max_model_len=512, kv_cache_memory_gib=KV_CACHE_GIB,
                                   enforce_eager=True)
    config.generation.max_new_tokens = max_new_tokens
    config.generation.max_input_tokens = 64
    config.generation.batch_size = 8
    return config


def _rows(dataset_dir: str) -> list[tuple]:
    accepted, rejected = load_from_disk(dataset_dir), load_from_disk(f"{dataset_dir}/rejected")
    return sorted(zip(accepted["review_id"], accepted["prompt"], accepted["response"], strict=True)) + sorted(
        zip(rejected["review_id"], rejected["prompt"], rejected["response"], rejected["reject_reason"], strict=True))


def _attempts(cache_path: str) -> list[tuple]:
    with SQLiteAnswerStore(Path(cache_path)) as store:
        return sorted((e.key, e.attempt, e.response, e.reason, e.final) for e in store.entries())


def test_ray_engine_accepts_the_same_answers_as_the_local_engine(
    tmp_path: Path, tiny_llama_dir: Path, local_ray: None, monkeypatch
) -> None:
    reviews = make_reviews(6)
    local_config = _config(tmp_path / "local", tiny_llama_dir)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    with build_teacher(local_config.teacher, local_config.work_dir) as teacher:
        local = generate_responses(reviews, GenerateSettings.of(local_config), tmp_path / "local-out",
                                   teacher=teacher, progress=False, work_dir=local_config.work_dir)

    token = "ray-engine-test-token"
    monkeypatch.setenv(TOKENS_ENV, token)
    ray_config = _config(tmp_path / "ray", tiny_llama_dir)
    with RayTeacher(ray_config.teacher, ray_config.work_dir, replicas=1, micro_batch=3) as teacher:
        on_ray = generate_responses(reviews, GenerateSettings.of(ray_config), tmp_path / "ray-out",
                                    teacher=teacher, progress=False, work_dir=ray_config.work_dir)
        # The replica (and the engine inside it) carries the run token: the reaper ends it with a killed run.
        import ray

        replica_pid = ray.get(teacher.actors[0][1].pid.remote())
        assert replica_pid in set(marked_processes(token))

    assert on_ray["engine"] == "ray" and local["engine"] == "local"
    assert on_ray["generated"] == local["generated"] == 12
    assert _rows(on_ray["dataset_dir"]) == _rows(local["dataset_dir"])
    assert _attempts(on_ray["cache_path"]) == _attempts(local["cache_path"])
    assert on_ray["replica_metrics"]["replica_0_answers"] >= 12
    assert on_ray["replica_metrics"]["replica_0_tokens_per_s"] > 0


def test_a_replica_killed_mid_run_loses_nothing_and_a_rerun_asks_nothing(
    tmp_path: Path, tiny_llama_dir: Path, local_ray: None
) -> None:
    import ray

    config = _config(tmp_path, tiny_llama_dir, max_new_tokens=48)
    reviews = make_reviews(30)
    cache_path = tmp_path / "store.sqlite"
    teacher = RayTeacher(config.teacher, config.work_dir, replicas=2, micro_batch=2)
    teacher.start()
    killed: list[int] = []
    generation_ended = threading.Event()

    def kill_first_replica_once_answers_are_committed() -> None:
        # Polls for as long as the run lasts (a loaded machine makes it slow), not for a fixed time.
        while not generation_ended.is_set():
            if cache_path.exists():
                with sqlite3.connect(cache_path) as connection:
                    try:
                        committed = connection.execute("SELECT COUNT(*) FROM responses").fetchone()[0] + \
                            connection.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
                    except sqlite3.OperationalError:  # tables not created yet
                        committed = 0
                if committed >= 4:
                    index, actor = teacher.actors[0]
                    ray.kill(actor)
                    killed.append(index)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_first_replica_once_answers_are_committed)
    try:
        killer.start()
        try:
            stats = generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out",
                                       teacher=teacher, cache_path=cache_path,
                                       progress=False, work_dir=config.work_dir)
        finally:
            generation_ended.set()
        killer.join()
        assert killed == [0]
        assert teacher.stats[0].died and teacher.resubmitted > 0
        assert stats["generated"] == stats["unique_requests"] == 60

        with SQLiteAnswerStore(cache_path) as store:
            finished = store.lookup(f"{key}" for key, *_ in _attempts(str(cache_path)))
            attempts = _attempts(str(cache_path))
        keys = {key for key, *_ in attempts}
        assert len(keys) == len(finished) == 60  # every answer stored...
        assert len(attempts) == len({(key, attempt) for key, attempt, *_ in attempts})  # ...exactly once
        assert len(load_from_disk(stats["dataset_dir"])) == stats["rows"]

        answered_before = sum(s.answers for s in teacher.stats.values())
        rerun = generate_responses(reviews, GenerateSettings.of(config), tmp_path / "out", teacher=teacher,
                                   cache_path=cache_path,
                                   progress=False, work_dir=config.work_dir)
        assert rerun["generated"] == 0 and rerun["cached"] == 60
        assert sum(s.answers for s in teacher.stats.values()) == answered_before
        assert _attempts(str(cache_path)) == attempts
    finally:
        killer.join()
        teacher.close()
