"""Corpus building and distillation pretraining: dedup/split rules, exact resume, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, load_from_disk

from fsa_distill.core.config import CorpusConfig, PretrainConfig
from fsa_distill.core.errors import InputError
from fsa_distill.tasks.stages.corpus import build_corpus
from fsa_distill.tasks.stages.pretrain import collate, epoch_batches, pretrain
from tests.interruptions import Crash, crash_at


def _config(**overrides) -> PretrainConfig:
    base = {"max_steps": 5, "batch_size": 4, "checkpoint_every": 2, "eval_every": 2, "log_every": 1,
            "max_source_length": 32, "max_target_length": 48, "learning_rate": 3e-3}
    return PretrainConfig(**{**base, **overrides})


def _losses(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "train_log.jsonl").read_text().splitlines()]


def test_corpus_keeps_valid_unique_pairs_with_nl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"review_id": "a", "review": "Good\nfood", "prompt": "rewrite", "response": "Nice.\nTasty.", "valid": True},
        {"review_id": "a", "review": "Good\nfood", "prompt": "rewrite", "response": "Nice.\nTasty.", "valid": True},
        {"review_id": "b", "review": "Bad", "prompt": "analysis", "response": "", "valid": False},
    ] + [{"review_id": f"r{i}", "review": f"review {i}", "prompt": "analysis", "response": f"resp {i}",
          "valid": True} for i in range(40)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "gen"))
    cfg = CorpusConfig(dev_fraction=0.25)
    stats = build_corpus([tmp_path / "gen"], tmp_path / "corpus", cfg)
    assert stats["n_train"] + stats["n_validation"] == 41 and stats["n_duplicates"] == 1 and stats["n_invalid"] == 1
    # one bar over both passes: 43 answers checked, then the 42 valid ones paired
    corpus_bar = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines()
                  if line.startswith("corpus:")]
    assert corpus_bar[-1].startswith("corpus: 100%") and "85/85" in corpus_bar[-1]
    corpus = load_from_disk(str(tmp_path / "corpus"))
    assert "Nice.[NL]Tasty." in list(corpus["train"]["target"]) + list(corpus["validation"]["target"])
    again = build_corpus([tmp_path / "gen"], tmp_path / "corpus2", cfg)
    assert again["digest"] == stats["digest"]  # deterministic split and content digest

    with pytest.raises(InputError, match="no valid teacher responses"):
        Dataset.from_list(rows[2:3]).save_to_disk(str(tmp_path / "bad"))
        build_corpus([tmp_path / "bad"], tmp_path / "corpus3", cfg)
    assert not (tmp_path / "corpus3").exists()


def test_heldout_file_becomes_validation(tmp_path: Path, tiny_generation_dir: Path) -> None:
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text('\ufeff{"ID": 1, "Text": "Great pizza", "mixtral_response": "Positive.\\nYes."}\n',
                       encoding="utf-8")
    stats = build_corpus([tiny_generation_dir], tmp_path / "corpus", CorpusConfig(), heldout_file=heldout)
    assert stats["n_validation"] == 1
    assert list(load_from_disk(str(tmp_path / "corpus"))["validation"]["target"]) == ["Positive.[NL]Yes."]


def test_length_grouping_cuts_padding() -> None:
    lengths = [((i * 37) % 97) + 3 for i in range(400)]
    examples = [([5] * n, [6] * n) for n in lengths]

    def pad_fraction(group: bool) -> float:
        real = padded = 0
        for batch in epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=group):
            tensors, n_real = collate([examples[i] for i in batch], pad_id=0)
            real += n_real
            padded += tensors["input_ids"].numel() + tensors["labels"].numel()
        return 1 - real / padded

    assert pad_fraction(True) < 0.1 < pad_fraction(False)
    assert sorted(i for b in epoch_batches(lengths, 8, 1, 0, True) for i in b) == list(range(400))
    assert epoch_batches(lengths, 8, 1, 3, True) == epoch_batches(lengths, 8, 1, 3, True)


def test_resume_is_bit_exact(tmp_path: Path, tiny_student_dir: Path, tiny_corpus_dir: Path) -> None:
    cfg = _config()
    full = pretrain(tiny_student_dir, tiny_corpus_dir, cfg, tmp_path / "full", key="k")
    assert full["steps"] == 5 and Path(full["model_dir"], "config.json").exists()
    with pytest.raises(Crash):
        pretrain(tiny_student_dir, tiny_corpus_dir, cfg, tmp_path / "resumed", log_metrics=crash_at(3), key="k")
    assert not (tmp_path / "resumed" / "model").exists()
    # A SIGKILL during a checkpoint save leaves its temp folder: it must be dropped, not resumed from.
    half_saved = tmp_path / "resumed" / "checkpoints" / ".step-00000004.0123456789ab.tmp"
    half_saved.mkdir()
    (half_saved / "trainer_state.json").write_bytes(b"truncated")
    resumed = pretrain(tiny_student_dir, tiny_corpus_dir, cfg, tmp_path / "resumed", key="k")
    # Steps 3-5 were recomputed from the step-2 checkpoint: every loss must equal the uninterrupted run's.
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "full")
    assert resumed["final_eval_loss"] == full["final_eval_loss"] and resumed["resumed_from_step"] == 2
    assert not half_saved.exists()
    assert pretrain(tiny_student_dir, tiny_corpus_dir, cfg, tmp_path / "full", key="k")["steps"] == 5  # cached result


def test_checkpoint_from_other_config_and_empty_split(tmp_path: Path, tiny_student_dir: Path,
                                                     tiny_corpus_dir: Path) -> None:
    pretrain(tiny_student_dir, tiny_corpus_dir, _config(max_steps=2), tmp_path / "run", key="a")
    with pytest.raises(InputError, match="another pretrain config, corpus or student"):
        pretrain(tiny_student_dir, tiny_corpus_dir, _config(max_steps=2, learning_rate=1e-3), tmp_path / "run",
                 key="b")

    no_train = tmp_path / "no-train"
    Dataset.from_list([{"id": "1", "source": "a", "target": "b", "prompt": ""}]).save_to_disk(str(no_train / "x"))
    from datasets import DatasetDict
    from datasets import load_from_disk as load

    DatasetDict({"validation": load(str(no_train / "x"))}).save_to_disk(str(tmp_path / "only-validation"))
    with pytest.raises(InputError, match="no 'train' split") as caught:
        pretrain(tiny_student_dir, tmp_path / "only-validation", _config(), tmp_path / "never", key="k")
    assert str(tmp_path / "only-validation") in str(caught.value)
    with pytest.raises(InputError, match="corpus folder not found"):
        pretrain(tiny_student_dir, tmp_path / "missing", _config(), tmp_path / "never", key="k")
    assert not (tmp_path / "never" / "model").exists()


class _RunsCodeWhenUnpickled:
    """What a malicious checkpoint carries: unpickling it with weights_only=False would create `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.folder),)


def test_checkpoint_state_is_json_and_tensors_and_pickled_objects_are_refused(
    tmp_path: Path, tiny_student_dir: Path, tiny_corpus_dir: Path
) -> None:
    cfg = _config(max_steps=2)
    pretrain(tiny_student_dir, tiny_corpus_dir, cfg, tmp_path / "run", key="k")
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["position"]["step"] == 2 and set(state["rng_by_rank"][0]) >= {"python", "numpy", "torch"}
    optimizer_state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert set(optimizer_state) == {"state", "param_groups"}

    executed = tmp_path / "executed"
    torch.save({**optimizer_state, "payload": _RunsCodeWhenUnpickled(executed)}, checkpoint / "optimizer.pt")
    (tmp_path / "run" / "pretrain_result.json").unlink()  # not finished: the next call resumes from the checkpoint
    with pytest.raises(InputError, match="pickled objects other than tensors"):
        pretrain(tiny_student_dir, tiny_corpus_dir, cfg, tmp_path / "run", key="k")
    assert not executed.exists()


def test_corpus_is_tokenized_once_into_memory_mapped_arrow(tmp_path: Path, tiny_student_dir: Path,
                                                           tiny_corpus_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from fsa_distill.models.student.load import load_tokenizer
    from fsa_distill.models.student.tokenized import length_keys, tokenized_split, tokenizer_digest

    tokenizer, key = load_tokenizer(tiny_student_dir), tokenizer_digest(tiny_student_dir)
    data = tokenized_split(tiny_corpus_dir, "train", tokenizer, key, 32, 48, tmp_path / "cache")
    n_rows = len(load_from_disk(str(tiny_corpus_dir))["train"])
    assert "tokenize train: 100%" in capsys.readouterr().err and len(data) == n_rows  # progress on one line
    files = [Path(entry["filename"]) for entry in data.cache_files]
    assert files and all(tmp_path / "cache" in file.parents for file in files)  # read from the Arrow on disk
    again = tokenized_split(tiny_corpus_dir, "train", tokenizer, key, 32, 48, tmp_path / "cache")
    assert [Path(e["filename"]).stat().st_ino for e in again.cache_files] == [f.stat().st_ino for f in files]
    source = load_from_disk(str(tiny_corpus_dir))["train"][3]["source"]
    assert again[3]["input_ids"] == tokenizer(source, max_length=32, truncation=True)["input_ids"]
    keys = length_keys(again)
    assert keys.shape == (len(again), 2) and keys[3, 1] == len(again[3]["input_ids"]) and keys[:, 1].max() <= 32
    shorter = tokenized_split(tiny_corpus_dir, "train", tokenizer, key, 16, 48, tmp_path / "cache")
    assert Path(shorter.cache_files[0]["filename"]).parent.parent != files[0].parent.parent  # its own cache entry
