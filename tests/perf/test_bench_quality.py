"""`fsa-distill bench quality` on a tiny warm-started student: the full-data figure's JSON, its dev curve and
test views (the real run fine-tunes the 37M MiniLM-BART on every train sentence, ~30 min per dataset)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fsa_distill.perf.bench_quality import run_quality_bench

WORDS = ["the", "food", "service", "was", "great", "bad", "but", "and", "staff", "positive", "negative", "neutral"]


def _tiny_pretrained_student(folder: Path) -> Path:
    """A 1-layer, hidden-32 BERT warm-started into BART the way `minilm-l6` is, saved as an HF folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from fsa_distill.models.student.warm_start import warm_start_bart

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"!'-.;|,", *WORDS]
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128), add_pooling_layer=False
              ).save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")
    model, bart_tokenizer = warm_start_bart(folder / "bert", decoder_layers=1)
    model.save_pretrained(folder / "bart")
    bart_tokenizer.save_pretrained(folder / "bart")
    return folder / "bart"


def test_quality_bench_writes_dev_curve_and_test_views(tmp_path: Path, shared_dir: Path) -> None:
    student = _tiny_pretrained_student(tmp_path)
    results = tmp_path / "quality.json"
    earlier = {"acsa/rest16": {"recipe": {"epochs": 4}, "test_f1_x100": {"normal": 50.0}},
               "atsa/laptop14": {"test_f1_x100": {"normal": 1.0}}, "atsa/rest14": {"recipe": {"epochs": 9}}}
    results.write_text(json.dumps({"seed": 42, "runs": earlier}), encoding="utf-8")
    overrides = [f"student.model={student}", "data.max_train_sentences=16", "data.max_dev_sentences=8",
                 "data.max_test_sentences=12", "finetune.epochs=2", "finetune.batch_size=8",
                 "finetune.max_new_tokens=8", "finetune.eval_batch_size=8"]
    output = run_quality_bench(["atsa/rest14"], overrides, tmp_path / "work", shared_dir / "fsa_datasets", results)

    assert json.loads(results.read_text(encoding="utf-8")) == output
    run = output["runs"]["atsa/rest14"]
    assert output["seed"] == 42 and run["student"].startswith("pretrained checkpoint")
    assert run["recipe"]["epochs"] == 2 and run["machine"]
    # the other dataset's run stays; a run without its recipe (an older file's) does not
    assert output["runs"]["acsa/rest16"] == earlier["acsa/rest16"] and "atsa/laptop14" not in output["runs"]
    assert (run["n_train"], run["n_dev"], run["n_test"]) == (16, 8, 12)
    assert [point["epoch"] for point in run["dev_curve"]] == [1, 2]
    assert run["best_dev_f1_x100"] == round(100 * max(point["dev_f1"] for point in run["dev_curve"]), 2)
    assert set(run["test_f1_x100"]) == {"normal", "implicit", "multi"}
    assert all(0 <= value <= 100 for value in run["test_f1_x100"].values())
    assert run["test_f1_x100"]["normal"] == round(100 * run["test_scores"]["normal"]["f1"], 2)
    assert 1 <= run["variety"]["distinct_outputs"] <= 12 and run["wall_s"] > 0
    # the 12 scored sentences are all test.json's: no hard part; polarity ignored, F1 cannot fall
    breakdown = run["breakdown"]
    assert breakdown["test_json"]["f1"] == run["test_f1_x100"]["normal"] and breakdown["hard_test_json"] is None
    assert breakdown["aspects_only"]["f1"] >= run["test_f1_x100"]["normal"]


def test_dtype_bench_compares_bf16_with_float32_at_the_same_recipe(tmp_path: Path, shared_dir: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM

    from fsa_distill.perf.bench_dtype import MAX_DEV_F1_DROP_X100, bench_dtype

    student = _tiny_pretrained_student(tmp_path)
    result = bench_dtype(str(student), tmp_path / "work", shared_dir / "fsa_datasets", n_train=16, n_dev=8, epochs=1)

    fp32, bf16 = result["runs"]["float32"], result["runs"]["bfloat16"]
    for run in (fp32, bf16):
        # no upper bound: where a CPU lacks native bf16, a tiny model's small matmuls can beat the measured peak
        assert run["train_tokens_per_s"] > 0 and run["peak_matmul_gflops"] > 0 and run["mfu"] > 0
        mfu_from_peak = 6 * result["n_params"] * run["train_tokens_per_s"] / (run["peak_matmul_gflops"] * 1e9)
        peak_rounding = 0.05 / run["peak_matmul_gflops"]  # the JSON keeps the peak to 0.1 GFLOP/s
        assert abs(run["mfu"] - mfu_from_peak) <= (peak_rounding + 0.001) * mfu_from_peak + 1e-4
    assert result["bf16_speedup"] == round(bf16["train_tokens_per_s"] / fp32["train_tokens_per_s"], 3)
    assert result["dev_f1_drop_x100"] == round(fp32["dev_f1_x100"] - bf16["dev_f1_x100"], 2)
    assert result["bf16_is_cpu_default"] == (result["bf16_speedup"] > 1
                                             and result["dev_f1_drop_x100"] <= MAX_DEV_F1_DROP_X100)
    model = AutoModelForSeq2SeqLM.from_pretrained(student)
    assert result["n_params"] == sum(parameter.numel() for parameter in model.parameters())


def test_matmul_peak_stops_growing_once_one_matmul_is_slow() -> None:
    import time

    from fsa_distill.perf.bench_train import peak_matmul_flops

    started = time.perf_counter()
    peak = peak_matmul_flops(sizes=(64, 128, 4096, 8192), slow_s=0.0)
    # slow_s=0 stops after the first matmul: a 64³ one, far from the 4096³ that would take seconds
    assert 0 < peak and time.perf_counter() - started < 1.0
