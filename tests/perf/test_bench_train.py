"""`fsa-distill bench train` logic on tiny inputs: both padding comparisons, student sizes and the JSON shape.

The real run (vLLM teacher, 200 reviews, 20+ steps per mode) takes ~10 min; here the corpora are a few dozen
pairs, steps and lengths are small, and the teacher is either skipped or the project's deterministic fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.teacher_fixtures import FakeTeacher

# threads=1: one torch thread per process (the bench's `--threads 1`); its 2-thread default oversubscribes the
# 2-core machine the moment anything else runs, and these tests check the results' shape, not speed ratios.
TINY = {"n_examples": 24, "n_pipeline_reviews": 6, "n_reviews": 8, "student": "t5-tiny", "batch_size": 8,
        "max_source": 32, "max_target": 64, "min_steps": 3, "output_tokens": 4, "sizes": ("t5-tiny",), "threads": 1}


@pytest.fixture(autouse=True)
def _needs_shared(shared_dir: Path) -> None:
    if not (shared_dir / "teacher_outputs" / "mixtral_500.jsonl").is_file():
        pytest.skip("needs ../shared/teacher_outputs/mixtral_500.jsonl")


def _check_padding(padding: dict, n_examples: int) -> None:
    assert padding["n_examples"] == n_examples
    assert padding["steps"] >= 3 and padding["steps"] == padding["epochs"] * -(-n_examples // 8)
    for mode in ("fixed", "dynamic", "dynamic_same_batches"):
        assert padding[f"{mode}_tokens_per_s"] > 0
    # fixed pads to 32/64: at least as much padding than either dynamic mode, which share the same real tokens
    assert padding["fixed_padding_fraction"] >= padding["dynamic_same_batches_padding_fraction"]
    assert padding["fixed_padding_fraction"] >= padding["dynamic_padding_fraction"]
    assert padding["ratio"] == pytest.approx(padding["dynamic_tokens_per_s"] / padding["fixed_tokens_per_s"],
                                             abs=0.01)


def test_skip_teacher_measures_mixtral_padding_and_student_only(tmp_path: Path) -> None:
    from fsa_distill.perf.bench_train import run_train_bench

    out = tmp_path / "train.json"
    result = run_train_bench(**TINY, work_dir=tmp_path / "work", with_teacher=False, results_path=out)
    assert json.loads(out.read_text()) == result
    assert result["pretrain_padding"] is None  # no teacher, no pipeline corpus: reported as missing, not faked
    _check_padding(result["pretrain_padding_mixtral"], 24)
    inference = result["inference"]
    assert inference["student"] == "t5-tiny" and inference["student_reviews_per_s"] > 0
    assert inference["ratio"] is None and inference["n_reviews"] == 8
    assert set(inference["by_student_size"]) == {"t5-tiny"}
    tiny = inference["by_student_size"]["t5-tiny"]  # timed at 64 and all-at-once; the faster one counts
    assert set(tiny["reviews_per_s_by_batch_size"]) == {"8", "64"}
    assert tiny["reviews_per_s"] == max(tiny["reviews_per_s_by_batch_size"].values())
    assert inference["student_batch_size"] == tiny["batch_size"]
    assert result["goals"] == {"padding_ratio_ge_2": None, "student_20x_faster": None}
    # The data-parallel section is run here only (the other tests leave it out): 1 process vs 2 under torchrun.
    ddp = result["ddp"]
    assert ddp["steps"] == 20 and ddp["single_process_tokens_per_s"] > 0 and ddp["ddp_2proc_tokens_per_s"] > 0
    assert ddp["ddp_loss_max_rel_diff"] <= 1e-4 and ddp["goal_loss_rel_diff_le_1e-4"]


def test_pipeline_corpus_comes_from_the_generate_stage(tmp_path: Path) -> None:
    from fsa_distill.perf.bench_train import run_train_bench

    teacher = FakeTeacher()
    result = run_train_bench(**TINY, work_dir=tmp_path / "work", with_teacher=False, teacher=teacher,
                             results_path=None, with_ddp=False)
    assert result["ddp"] is None
    padding = result["pretrain_padding"]
    assert padding["generation"]["requests"] == 12  # 6 reviews x (analysis, rewrite)
    _check_padding(padding, padding["generation"]["rows"])
    assert (tmp_path / "work" / "bench-train" / "cache" / "teacher_responses.sqlite").is_file()
    inference = result["inference"]
    assert inference["teacher_reviews_per_s"] > 0 and inference["ratio"] is not None
    assert result["goals"]["padding_ratio_ge_2"] == (padding["ratio"] >= 2)
    # a rerun answers from the per-review cache: the teacher only sees the timing requests
    before = teacher.n_requests
    run_train_bench(**TINY, work_dir=tmp_path / "work", with_teacher=False, teacher=teacher, results_path=None,
                    with_ddp=False)
    assert teacher.n_requests - before == 2 + 8  # warm-up + the timed reviews


def test_default_student_is_the_demo_profiles() -> None:
    from fsa_distill.perf.bench_train import demo_config

    assert demo_config(Path("w")).student.model == "minilm-l6"
    assert demo_config(Path("w")).work_dir == Path("w") / "bench-train"
