"""The `study` flow end to end on a tiny configuration: every arm (A none, B denoising, C and D' the real offline
teacher on vLLM, D imported answers), real Prefect and MLflow, a t5-tiny student. A benchmark-sized study is
`fsa-distill study`, never CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# Real-format imported answers (the fields of ../shared/teacher_outputs/mixtral_500.jsonl): two analyses, two rewrites.
IMPORTED = [
    {"ID": 1, "Text": "The burger was juicy and the fries were crisp.", "Overall": 5.0,
     "mixtral_response": 'Opinion Target 1: "burger"\nAspect: "taste"\nSentiment: strongly positive\nReasoning: juicy.'},
    {"ID": 2, "Text": "Our server was rude and the soup arrived cold.", "Overall": 1.0,
     "mixtral_response": 'Opinion Target 1: "server"\nAspect: "manners"\nSentiment: negative\nReasoning: rude.'},
    {"ID": 3, "Text": "Lovely patio, slow kitchen.", "Overall": 3.0,
     "mixtral_response": "I loved sitting on the lovely patio, but I was annoyed that the kitchen was so slow."},
    {"ID": 4, "Text": "Best ramen in town, and cheap too.", "Overall": 5.0,
     "mixtral_response": "I think this is the best ramen in town and I am delighted that it is cheap as well."},
]


def tiny_study(work_dir: Path, teacher_dir: Path, answers: Path) -> list[str]:
    return [
        f"work_dir={work_dir}", f"study.imported_answers={answers}", f"study.results_path={work_dir}/study.json",
        "study.benchmark_reviews_per_dataset=3", "study.bootstrap_samples=200",
        "data.datasets=[atsa/rest14]", "data.max_train_sentences=24", "data.max_dev_sentences=8",
        "data.max_test_sentences=20", f"teacher.model={teacher_dir}", "teacher.kv_cache_memory_gib=1",
        "generation.max_new_tokens=96", "student.model=t5-tiny", "student.vocab_size=600", "pretrain.max_steps=4", "pretrain.batch_size=4",
        "pretrain.checkpoint_every=2", "pretrain.eval_every=2", "pretrain.max_target_length=96",
        "finetune.epochs=1", "finetune.seeds=[42,52]", "finetune.max_new_tokens=24",
        "tracking.experiment_name=study-test",
    ]


def test_every_arm_runs_end_to_end(tmp_path: Path, smollm2_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsa_distill.flows.study import ARMS, study

    # The three SmolLM2 generations (D' analysis, D' rewrite, C) each start a vLLM engine: in this process it
    # starts faster, and again faster after the first (no engine process to spawn and import each time).
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

    answers = tmp_path / "answers.jsonl"
    answers.write_text("\ufeff" + "".join(json.dumps(r) + "\n" for r in IMPORTED), encoding="utf-8")
    overrides = tiny_study(tmp_path / "work", smollm2_dir[0], answers)
    results = study(overrides=overrides)

    assert set(results["arms"]) == set(ARMS) and results["seeds"] == [42, 52]
    for arm in ("B", "C", "D", "D_prime"):
        low, high = results["delta_vs_A"][arm]["ci95"]
        assert low <= results["delta_vs_A"][arm]["mean"] <= high
        assert results["arms"][arm]["pretrain_steps"] == 4  # the same steps for every pretraining arm
    for arm in ARMS:  # every arm's best dev F1, per seed, beside its test F1
        dev = results["arms"][arm]["dev_f1"]["atsa/rest14"]
        assert set(dev["by_seed"]) == {"42", "52"} and all(0 <= f1 <= 100 for f1 in dev["by_seed"].values())
    assert len(results["goals"]) == 3 and {"D_minus_D_prime", "best_teacher_minus_B"} <= set(results["comparisons"])
    assert results["teacher_quality"]["C"]["gold_analyses"] == 3  # SmolLM2's analyses of the 3 benchmark reviews
    assert results["teacher_quality"]["D"]["answers"] == 4
    written = json.loads(Path(results["results_path"]).read_text(encoding="utf-8"))
    assert written["arms"]["D"]["f1_normal_mean"] == results["arms"]["D"]["f1_normal_mean"]
    assert Path(results["report_path"]).read_text(encoding="utf-8").count("<img") >= 2

    # Resumable through the stage caches: an identical second run redoes nothing and finds the same numbers.
    again = study(overrides=overrides)
    assert again["stages_this_run"] and set(again["stages_this_run"].values()) == {"cached"}, again["stages_this_run"]
    assert again["stages_this_run"].keys() == results["stages_this_run"].keys()
    assert again["arms"] == results["arms"]
