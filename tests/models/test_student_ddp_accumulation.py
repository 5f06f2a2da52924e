"""Gradient accumulation under DDP: 2 processes (gloo, CPU) × 2 micro-batches per step give, step for step, the
losses of one process that takes the whole global batch in one forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsa_distill.core.config import DistillConfig, PretrainConfig
from fsa_distill.tasks.stages.launch import run_in_processes
from fsa_distill.tasks.stages.pretrain import PretrainSettings, pretrain
from tests.student_fixtures import train_log

pytestmark = pytest.mark.slow  # starts 2 fresh interpreters under torchrun

# The tiny corpus has 107 training pairs. Without length grouping an epoch is one permutation cut into
# consecutive batches, so 2 micro-batches of 2 cover the same 4 pairs as one batch of 4, epoch after epoch:
# 53 micro-batches of 2 and one of 1 (where rank 1 gets nothing and runs at weight 0) = 26 batches of 4 and one
# of 3. 30 steps cross that short step (27) and the epoch boundary.
COMMON = {"max_steps": 30, "checkpoint_every": 30, "eval_every": 10, "log_every": 1, "group_by_length": False,
          "max_source_length": 32, "max_target_length": 48, "learning_rate": 3e-3}
DDP = {**COMMON, "batch_size": 2, "gradient_accumulation_steps": 2}  # global step: 2 × 2 = 4 pairs
WHOLE_BATCH = {**COMMON, "batch_size": 4, "gradient_accumulation_steps": 1}


def test_two_processes_accumulating_two_micro_batches_give_the_losses_of_one_whole_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, student_without_dropout: Path, tiny_corpus_dir: Path
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # each rank one thread on this 2-core machine
    config = DistillConfig(pretrain=PretrainConfig(**DDP))
    arguments = {"student_dir": student_without_dropout, "corpus_dir": tiny_corpus_dir, "key": "k"}
    two = run_in_processes("pretrain", arguments, PretrainSettings.of(config), config.train, tmp_path / "ddp", 2)
    one = pretrain(student_without_dropout, tiny_corpus_dir, PretrainConfig(**WHOLE_BATCH), tmp_path / "one",
                   key="k")
    assert (two["num_processes"], one["num_processes"]) == (2, 1)
    assert two["epochs"] > 1 and one["epochs"] > 1  # both crossed into the second epoch

    ddp_log, whole_log = train_log(tmp_path / "ddp"), train_log(tmp_path / "one")
    assert [r["step"] for r in ddp_log] == [r["step"] for r in whole_log] == list(range(1, 31))
    assert [r["lr"] for r in ddp_log] == [r["lr"] for r in whole_log]
    relative = [abs(a[name] - b[name]) / abs(a[name]) for a, b in zip(whole_log, ddp_log, strict=True)
                for name in ("loss", "eval_loss") if name in a]
    print(f"max relative loss difference over {len(relative)} losses: {max(relative):.2e}")
    assert max(relative) <= 1e-4, list(zip(whole_log, ddp_log, strict=True))
    assert len(relative) == 30 + 3 and all("eval_loss" in r for r in ddp_log if r["step"] % 10 == 0)
    assert whole_log[-1]["loss"] < whole_log[0]["loss"]  # it trained
