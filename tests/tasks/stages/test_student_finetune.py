"""Fine-tuning on a real benchmark slice, batched prediction, zero-shot ranking and the teacher baseline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsa_distill.cli.app import app
from fsa_distill.core.config import DistillConfig
from fsa_distill.tasks.ops.predict import generate_predictions
from fsa_distill.tasks.stages.finetune import FinetuneSettings, finetune
from fsa_distill.tasks.stages.teacher_baseline import teacher_baseline
from fsa_distill.tasks.stages.zeroshot import LABELS, aspect_items, rank_polarities
from fsa_distill.tasks.tracking.tables import aggregate_runs
from tests.interruptions import Crash, crash_at


def _config(benchmark_dir: Path) -> DistillConfig:
    config = DistillConfig()
    config.data.data_dir = benchmark_dir
    config.data.max_train_sentences = 32
    config.data.max_dev_sentences = 8
    config.data.max_test_sentences = 20
    config.finetune.epochs = 2
    config.finetune.learning_rate = 1e-3
    config.finetune.max_new_tokens = 16
    return config


def test_finetune_writes_one_parseable_prediction_per_gold_sentence(
    tmp_path: Path, tiny_student_dir: Path, benchmark_dir: Path
) -> None:
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.benchmark.targets import parse_prediction

    config = _config(benchmark_dir)
    result = finetune(tiny_student_dir, "atsa", "rest14", 42, FinetuneSettings.of(config), tmp_path / "ft", key="k")
    gold = load_sentences("atsa", "rest14", "test", benchmark_dir)[:20]
    lines = Path(result["predictions_path"]).read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(gold) == 20
    predictions = [json.loads(line)["prediction"] for line in lines]
    for prediction, sentence in zip(predictions, gold, strict=True):
        parse_prediction(prediction, "atsa", sentence["sentence"])  # never raises
    assert set(result["scores"]) == {"normal", "implicit", "multi"}
    assert 0.0 <= result["best_dev_f1"] <= 1.0 and len(result["dev_history"]) == 2
    assert Path(result["model_dir"], "config.json").exists() and not (tmp_path / "ft" / "last").exists()
    assert finetune(tiny_student_dir, "atsa", "rest14", 42, FinetuneSettings.of(config), tmp_path / "ft",
                    key="k") == result  # cached

    other_seed = {"dataset": "atsa/rest14", "seed": 52, "scores": {"normal": {"precision": 1, "recall": 1, "f1": 1}}}
    summary = aggregate_runs([{**result, "dataset": "atsa/rest14"}, other_seed])["atsa/rest14"]
    assert summary["normal"]["n_seeds"] == 2 and summary["implicit"]["n_seeds"] == 1


def test_auxiliary_datasets_add_their_train_sentences_with_the_task_marked(benchmark_dir: Path) -> None:
    from fsa_distill.benchmark.data import load_task_data
    from fsa_distill.benchmark.targets import linearise
    from fsa_distill.tasks.stages.finetune import _train_sources_and_targets

    config = _config(benchmark_dir)
    splits = load_task_data("atsa", "rest14", config.data)
    alone = _train_sources_and_targets("atsa", "rest14", splits, FinetuneSettings.of(config))
    config.finetune.auxiliary_datasets = ["acsa/rest16", "atsa/rest14"]
    sources, targets = _train_sources_and_targets("atsa", "rest14", splits, FinetuneSettings.of(config))
    assert (sources[:32], targets[:32]) == alone and len(alone[0]) == 32  # its own sentences first, unmarked
    assert len(sources) == 64 and all(source.startswith("aspect categories: ") for source in sources[32:])
    rest16 = load_task_data("acsa", "rest16", config.data)["train"]
    assert targets[32:] == [linearise(sentence, "acsa") for sentence in rest16]
    assert " | " in targets[32] and "#" not in targets[32]  # categories, e.g. `food quality | positive`


def test_finetune_resumes_at_the_epoch_boundary(tmp_path: Path, tiny_student_dir: Path, benchmark_dir: Path) -> None:
    config = _config(benchmark_dir)
    config.data.max_train_sentences, config.data.max_dev_sentences, config.data.max_test_sentences = 16, 4, 4
    full = finetune(tiny_student_dir, "acsa", "rest16", 7, FinetuneSettings.of(config), tmp_path / "full", key="k")
    with pytest.raises(Crash):  # after epoch 1
        finetune(tiny_student_dir, "acsa", "rest16", 7, FinetuneSettings.of(config), tmp_path / "resumed",
                 log_metrics=crash_at(1),
                 key="k")
    resumed = finetune(tiny_student_dir, "acsa", "rest16", 7, FinetuneSettings.of(config),
                       tmp_path / "resumed", key="k")
    assert resumed["dev_history"] == full["dev_history"]  # epoch 2 continued exactly (same train loss)
    assert Path(resumed["predictions_path"]).read_text() == Path(full["predictions_path"]).read_text()


def test_batched_predict_preserves_order(tiny_student_dir: Path) -> None:
    texts = ["The pizza was great but the service was slow.", "Bad.", "Battery life is fine.",
             "I loved the wine list and the friendly staff, would come back.", "Screen too dim.", "ok"]
    one_by_one = [generate_predictions(tiny_student_dir, [text], batch_size=1, max_new_tokens=8)[0]
                  for text in texts]
    batched = generate_predictions(tiny_student_dir, texts, batch_size=4, max_new_tokens=8)
    assert batched == one_by_one
    assert generate_predictions(tiny_student_dir, texts[::-1], batch_size=3, max_new_tokens=8) == one_by_one[::-1]


def test_zero_shot_returns_a_label_per_aspect(tiny_student_dir: Path, benchmark_dir: Path) -> None:
    from fsa_distill.benchmark.data import load_sentences

    for task, dataset in (("atsa", "rest14"), ("acsa", "rest16")):
        sentences = load_sentences(task, dataset, "test", benchmark_dir)[:8]
        items = aspect_items(sentences, task)
        labels = rank_polarities(tiny_student_dir, items, task, batch_size=7)
        assert len(labels) == len(items) > 0 and set(labels) <= set(LABELS)
    result = CliRunner().invoke(app, ["zeroshot", "--model", str(tiny_student_dir), "--task", "atsa",
                                      "--dataset", "rest14", "--max-sentences", "5", "--data-dir",
                                      str(benchmark_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 <= summary["accuracy"] <= 1 and summary["n_aspects"] > 0


def test_cli_predict_reviews_and_split(tmp_path: Path, tiny_student_dir: Path, benchmark_dir: Path) -> None:
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text('{"id": "a", "text": "Great food."}\n{"id": "b", "text": "Slow service."}\n',
                       encoding="utf-8")
    runner = CliRunner()
    out = tmp_path / "pred.jsonl"
    result = runner.invoke(app, ["predict", "--model", str(tiny_student_dir), "--input", str(reviews), "--out",
                                 str(out), "--max-new-tokens", "6", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["reviews"] == 2
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["a", "b"]
    result = runner.invoke(app, ["predict", "--model", str(tiny_student_dir), "--input", "atsa/rest14/nosuch",
                                 "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code == 2 and not (tmp_path / "x.jsonl").exists()


class _FakeTeacher:
    """Answers like a perfect teacher would (zero-shot: gold label; extraction: gold target)."""

    model_id = "fake"

    def __init__(self, sentences: list[dict], task: str) -> None:
        from fsa_distill.benchmark.targets import linearise

        self.gold = {s["sentence"]: linearise(s, task) for s in sentences}

    def generate(self, requests):
        from fsa_distill.models.teacher.base import TeacherAnswer

        results = []
        for request in requests:
            content = request.messages[0]["content"]
            if "one word" in content:
                sentence, aspect = re.search(r'Review: "(.*)"\n.*? "(.*)"\?\n', content, re.DOTALL).groups()
                pairs = dict(p.split(" | ") for p in self.gold[sentence].split(" ; ") if p)
                results.append(TeacherAnswer(f"{pairs[aspect].capitalize()}.", 2, "stop"))
            else:
                sentence = content.rsplit("Sentence: ", 1)[1].split("\nAnswer:")[0]
                results.append(TeacherAnswer(self.gold[sentence] + "\nmore text", 9, "stop"))
        return results


def test_teacher_baseline_scores_a_perfect_teacher(benchmark_dir: Path) -> None:
    from fsa_distill.benchmark.data import load_sentences

    sentences = [s for s in load_sentences("atsa", "rest14", "test", benchmark_dir)[:30]
                 if all(a["polarity"] != "conflict" for a in s["aspects"])
                 and len({a["target"] for a in s["aspects"]}) == len(s["aspects"])]
    examples = load_sentences("atsa", "rest14", "train", benchmark_dir)[:2]
    result = teacher_baseline(_FakeTeacher(sentences, "atsa"), "atsa", sentences, examples)
    assert result["zero_shot"]["accuracy"] == 1.0 and result["zero_shot"]["unparsed"] == 0
    assert result["extraction"]["normal"]["f1"] == pytest.approx(1.0)


def test_stage_entry_points(tiny_student_dir: Path, benchmark_dir: Path) -> None:
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.tasks.stages.teacher_baseline import TeacherBaselineSettings, evaluate_teacher
    from fsa_distill.tasks.stages.zeroshot import ZeroShotSettings, evaluate_zero_shot

    config = _config(benchmark_dir)
    config.data.max_test_sentences = 6
    config.evaluate.teacher_max_sentences = 5
    student = evaluate_zero_shot(tiny_student_dir, "acsa", "rest16", ZeroShotSettings.of(config))
    assert student["n_aspects"] > 0 and 0 <= student["macro_f1"] <= 1
    gold = load_sentences("acsa", "rest16", "test", benchmark_dir)
    teacher = evaluate_teacher(_FakeTeacher(gold, "acsa"), "acsa", "rest16", TeacherBaselineSettings.of(config))
    assert teacher["n_sentences"] == 5 and set(teacher["extraction"]) == {"normal", "implicit", "multi"}
    assert teacher["extraction"]["normal"]["f1"] == pytest.approx(1.0)


def test_label_smoothing_is_the_plain_loss_at_zero_and_adds_the_vocabulary_term_above(tiny_student_dir: Path) -> None:
    """Fine-tuning's loss: 0 is the model's own token loss; ε mixes in the mean over the vocabulary, as
    (1 - ε) · NLL + ε · mean(-log p) per target token (torch's definition)."""
    import torch

    from fsa_distill.models.student.load import load_student
    from fsa_distill.tasks.stages.finetune import token_loss_sum

    model, tokenizer = load_student(tiny_student_dir)
    model.eval()
    batch = dict(tokenizer(["the food was great", "slow service"], padding=True, return_tensors="pt"))
    labels = tokenizer(["food | positive", "service | negative ; x | neutral"], padding=True,
                       return_tensors="pt")["input_ids"]
    batch["labels"] = labels.masked_fill(labels == tokenizer.pad_token_id, -100)
    with torch.no_grad():
        plain = token_loss_sum(model, batch, 0.0)
        smoothed = token_loss_sum(model, batch, 0.1)
        log_p = torch.log_softmax(model(**batch).logits.float(), dim=-1)
    mask = batch["labels"] != -100
    nll = -log_p.gather(-1, batch["labels"].clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask].sum()
    uniform = -log_p.mean(-1)[mask].sum()
    assert torch.allclose(plain, nll, rtol=1e-4)
    assert torch.allclose(smoothed, 0.9 * nll + 0.1 * uniform, rtol=1e-4)
