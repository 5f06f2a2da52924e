"""Distillation pretraining: the student learns to write the teacher's response for a review (source → target).

Why a plain torch loop rather than `Seq2SeqTrainer`: the loop below is the whole algorithm, top to bottom
(nanoGPT style), and the two things this stage promises are easy to see and to test in it:
- exact resume: a checkpoint holds model, optimizer, scheduler, every RNG state and the position in the data
  order (tensors in safetensors and a weights-only torch file, the rest in JSON: nothing is unpickled); the data
  order is a pure function of (seed, epoch), so a resumed run's next loss equals the uninterrupted run's, bit
  for bit (tests/tasks/stages/test_student_pretrain.py checks it);
- dynamic padding with length-grouped batches: each batch is padded only to its own longest source and target,
  and batches are drawn from length-sorted "megabatches" (as HF's LengthGroupedSampler) so little is padding.
  The paper's code pads every target to the maximum (400); `pad_to_max_length` keeps that mode for the
  padding benchmark (fsa_distill/perf/bench_train.py).

Optimiser: AdamW by default (the paper's lr 3e-3, cosine decay to 1e-5, linear warmup, gradient clipping at
`max_grad_norm`): its state is small and standard, and at student sizes it trains stably at that lr.
`optimizer: adafactor` gives T5's original recipe instead: steps scaled by the parameter RMS are not used
(scale_parameter=False, so the configured lr means the same thing), but updates are clipped by their RMS
(clip_threshold=1.0), which is what keeps t5-base stable at lr 3e-3 on large corpora.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import task
from pydantic import Field
from tqdm.auto import tqdm

from fsa_distill.core.config import DistillConfig, PretrainConfig
from fsa_distill.core.digests import sha256_tree
from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_file, remove_leftover_temporaries
from fsa_distill.models.student import training
from fsa_distill.models.student.batching import Example, collate, epoch_batches
from fsa_distill.models.student.distributed import Processes, start_processes
from fsa_distill.models.student.load import load_student, load_tokenizer, model_digest
from fsa_distill.models.student.tokenized import length_keys, rows, tokenized_split, tokenizer_digest
from fsa_distill.tasks.stages.corpus import CorpusResult, stored_corpus_digest
from fsa_distill.tasks.stages.keys import Placement, StageSettings
from fsa_distill.tasks.stages.records import ModelResult
from fsa_distill.tasks.stages.stage_task import (
    current_stage_key,
    metrics_logger,
    model_heavy,
    replay_train_log,
    stage_dir,
    stage_task_options,
)

MAX_EVAL_EXAMPLES = 2000  # validation loss on at most this many held-out responses (first N)
KEEP_CHECKPOINTS = 2
# Fields that do not change the training trajectory: a checkpoint stays resumable when only these differ.
NON_TRAJECTORY_FIELDS = {"checkpoint_every", "eval_every", "log_every", "enabled"}


class PretrainSettings(StageSettings):
    """What distillation pretraining reads: its own section of the config."""

    pretrain: PretrainConfig

    @classmethod
    def of(cls, config: DistillConfig) -> PretrainSettings:
        return cls(pretrain=config.pretrain)


class PretrainResult(ModelResult):
    final_train_loss: float | None
    final_eval_loss: float | None  # None: the corpus has no validation split
    steps: int
    resumed_from_step: int
    epochs: float
    tokens_per_s: float | None
    padding_ratio: float | None
    train_seconds: float | None = None
    n_train: int
    n_validation: int
    num_processes: int = 1
    # the settings that shape the training trajectory (resuming checks them)
    config: dict[str, Any] = Field(default_factory=dict)
    corpus_digest: str = ""
    student_digest: str = ""


@dataclass
class Position:
    """Where training is: optimizer steps taken, and the next batch in the current epoch's order."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


# --------------------------------------------------------------------------------------------- data

def load_corpus_split(corpus_dir: Path, split: str) -> tuple[list[str], list[str]]:
    """(sources, targets) of one split of the corpus stage's DatasetDict."""
    from datasets import load_from_disk

    corpus_dir = Path(corpus_dir)
    if not corpus_dir.exists():
        raise InputError(corpus_dir, None, "corpus folder not found")
    try:
        corpus = load_from_disk(str(corpus_dir))
    except Exception as error:  # noqa: BLE001
        raise InputError(corpus_dir, None, f"not a saved Hugging Face dataset: {error}") from None
    if split not in corpus:
        if split == "train":
            raise InputError(corpus_dir, None, f"no {split!r} split (has {list(corpus)})")
        return [], []
    data = corpus[split]
    return list(data["source"]), list(data["target"])


# ----------------------------------------------------------------------------------- optimisation

def make_optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    groups = training.parameter_groups(model, cfg.learning_rate, cfg.cross_attention_learning_rate)
    if cfg.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                         scale_parameter=False, relative_step=False, warmup_init=False, clip_threshold=1.0)
    return training.adamw(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def lr_schedule(optimizer: torch.optim.Optimizer, cfg: PretrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then cosine from each group's rate down to min_learning_rate / learning_rate of it at
    max_steps (transformers' schedule)."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, cfg.warmup_steps, cfg.max_steps, min_lr_rate=cfg.min_learning_rate / cfg.learning_rate)


def autocast_context(cfg: PretrainConfig, device: str) -> torch.autocast:
    """The configured bf16 autocast (`pretrain.bf16`) on `device`."""
    return training.bf16_autocast(cfg.bf16, device)


@torch.no_grad()
def evaluate_loss(model, examples: list[Example], pad_id: int, batch_size: int, device: str, cfg: PretrainConfig,
                  procs: Processes | None = None) -> float:
    """Token-weighted mean cross-entropy on held-out responses (model left in eval mode; no RNG is used); with
    several processes each scores every N-th batch and the sums are all-reduced."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda index: len(examples[index][1]))
    total_loss, total_tokens = 0.0, 0
    rank, world = (procs.rank, procs.world) if procs else (0, 1)
    for start in range(rank * batch_size, len(order), batch_size * world):
        batch, _ = collate([examples[i] for i in order[start:start + batch_size]], pad_id)
        batch = {key: value.to(device) for key, value in batch.items()}
        with autocast_context(cfg, device):
            logits = model(**batch).logits
        n_tokens = int((batch["labels"] != -100).sum())
        loss = torch.nn.functional.cross_entropy(
            logits.float().view(-1, logits.size(-1)), batch["labels"].view(-1), ignore_index=-100, reduction="sum")
        total_loss += float(loss)
        total_tokens += n_tokens
    if procs is not None:
        total_loss, total_tokens = procs.sum(total_loss), procs.sum(total_tokens)
    return total_loss / max(1, total_tokens)


# ------------------------------------------------------------------------------------ checkpoints

def _trajectory_config(cfg: PretrainConfig) -> dict[str, Any]:
    return {key: value for key, value in cfg.model_dump(mode="json").items() if key not in NON_TRAJECTORY_FIELDS}


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest finished checkpoint; a half-saved one (killed mid-save) is removed, never resumed from."""
    remove_leftover_temporaries(Path(out_dir) / "checkpoints")
    found = sorted((Path(out_dir) / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def save_checkpoint(out_dir: Path, model, tokenizer, optimizer, scheduler, position: Position,
                    cfg: PretrainConfig, inputs: dict[str, str], rng_by_rank: list[dict[str, Any]]) -> Path:
    """Everything needed to continue exactly; written to a temp folder and renamed, old ones pruned.

    The data position is the same on every process (each takes its part of the same global batches); the RNG
    states are one per process (`rng_by_rank`). `saved_by` names the writing process (rank 0 of N, its pid).
    """
    folder = Path(out_dir) / "checkpoints" / f"step-{position.step:08d}"
    with training.saving_student(model, tokenizer, folder) as tmp:
        training.save_training_state(tmp, optimizer, {
            "position": asdict(position), "scheduler": scheduler.state_dict(), "rng_by_rank": rng_by_rank,
            "config": _trajectory_config(cfg), "inputs": inputs,
            "saved_by": {"rank": 0, "num_processes": len(rng_by_rank), "pid": os.getpid()},
        })
    for old in sorted((Path(out_dir) / "checkpoints").glob("step-*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from (they will be recomputed)."""
    if path.exists():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


# ------------------------------------------------------------------------------------------- main

def _step_loss(model, batches: list[tuple[dict[str, torch.Tensor], float]], procs: Processes,
               cfg: PretrainConfig, accumulation: int) -> float:
    """Forward and backward over one optimizer step's micro-batches; returns the step's loss.

    The loss is the token-level mean over the whole GLOBAL step (every micro-batch of every process): each
    process sums its token losses and divides by the global token count (all-reduced first). DDP averages the
    gradients over processes, so each local loss is multiplied by the process count: N processes then get the
    gradient one process gets with the whole batch, whatever the padding of each process's part.
    """
    local_tokens = sum(float((batch["labels"] != -100).sum()) * weight for batch, weight in batches)
    global_tokens = max(procs.sum(local_tokens), 1.0)
    local_loss = 0.0
    for index, (batch, weight) in enumerate(batches):
        n_tokens = (batch["labels"] != -100).sum()
        syncing = index == accumulation - 1 or procs.world == 1
        with (nullcontext() if syncing else procs.accelerator.no_sync(model)):
            with autocast_context(cfg, procs.device):
                token_sum = model(**batch).loss * n_tokens  # the model's token mean back to a sum
            loss = token_sum * (weight * procs.world / global_tokens)
            procs.accelerator.backward(loss)
        local_loss += float(token_sum.detach()) * weight
    return procs.sum(local_loss) / global_tokens


def _tokenized_corpus(corpus_dir: Path, tokenizer, student_dir: Path, cfg: PretrainConfig, cache_dir: Path,
                      procs: Processes) -> tuple[Any, list[Example]]:
    """(train as memory-mapped Arrow, validation examples): rank 0 tokenizes (or finds the cache), the other
    processes open what it wrote."""
    from datasets import load_from_disk

    if not Path(corpus_dir).exists():
        raise InputError(corpus_dir, None, "corpus folder not found")
    try:
        splits = list(load_from_disk(str(corpus_dir)))
    except Exception as error:  # noqa: BLE001
        raise InputError(corpus_dir, None, f"not a saved Hugging Face dataset: {error}") from None
    if "train" not in splits:
        raise InputError(corpus_dir, None, f"no 'train' split (has {splits})")
    key = tokenizer_digest(student_dir)
    lengths = (cfg.max_source_length, cfg.max_target_length)
    if procs.is_main:
        tokenized_split(corpus_dir, "train", tokenizer, key, *lengths, cache_dir)
        tokenized_split(corpus_dir, "validation", tokenizer, key, *lengths, cache_dir, limit=MAX_EVAL_EXAMPLES)
    procs.barrier()
    train = tokenized_split(corpus_dir, "train", tokenizer, key, *lengths, cache_dir, build=False)
    if len(train) == 0:
        raise InputError(corpus_dir, "train", "the training split is empty")
    validation = tokenized_split(corpus_dir, "validation", tokenizer, key, *lengths, cache_dir,
                                 limit=MAX_EVAL_EXAMPLES, build=False)
    return train, rows(validation, list(range(len(validation))))


def _open_checkpoint(out_dir: Path, procs: Processes, cfg: PretrainConfig, inputs: dict[str, str]
                     ) -> tuple[Path | None, Any, dict[str, Any] | None]:
    """(latest checkpoint, its optimizer state, its JSON state), or Nones for a fresh start. Rank 0 alone tidies
    the folder (a killed save's leftovers); every rank then resumes from what it found. A checkpoint of another
    trajectory (config, corpus or student) is refused."""
    found = latest_checkpoint(out_dir) if procs.is_main else None
    checkpoint = procs.broadcast(str(found) if found else None)
    if checkpoint is None:
        return None, None, None
    checkpoint = Path(checkpoint)
    optimizer_state, state = training.load_training_state(checkpoint)
    if state["config"] != _trajectory_config(cfg) or state["inputs"] != inputs:
        raise InputError(checkpoint, None, "checkpoint was made with another pretrain config, corpus or "
                                           "student; use a new output folder or delete its checkpoints/")
    return checkpoint, optimizer_state, state


def _resume(checkpoint: Path | None, state: dict[str, Any] | None, optimizer_state: Any, optimizer, scheduler,
            procs: Processes, log_path: Path) -> Position:
    """Continue where the checkpoint stopped (optimizer, schedule, this process's RNG, data position, the log
    cut back to its step), or start the log afresh; the position to train from."""
    if state is None:
        if procs.is_main:
            log_path.unlink(missing_ok=True)
        return Position()
    # Order matters: building the scheduler resets the lr, so the optimizer state is loaded after it.
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(state["scheduler"])
    training.resume_rng(state, checkpoint, procs.world, procs.rank)
    position = Position(**state["position"])
    if procs.is_main:
        _truncate_log(log_path, position.step)
    return position


def _step_batches(train: Any, lengths: Any, batches: list[list[int]], position: Position, tokens: dict[str, int],
                  pad_id: int, cfg: PretrainConfig, procs: Processes
                  ) -> tuple[list[tuple[dict[str, torch.Tensor], float]], list[list[int]]]:
    """This process's micro-batches for the next optimizer step, and the epoch order they came from (a new one
    when the epoch ended); advances `position` and counts real and padded tokens into `tokens`."""
    pad_to = (cfg.max_source_length, cfg.max_target_length) if cfg.pad_to_max_length else None
    step_batches = []
    for _ in range(cfg.gradient_accumulation_steps):
        if position.batch_in_epoch >= len(batches):  # next epoch, new (deterministic) order
            position.epoch += 1
            position.batch_in_epoch = 0
            batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, position.epoch, cfg.group_by_length)
        indices, weight = procs.shard(batches[position.batch_in_epoch])
        batch, n_real = collate(rows(train, indices), pad_id, pad_to)
        position.batch_in_epoch += 1
        step_batches.append(({key: value.to(procs.device) for key, value in batch.items()}, weight))
        tokens["real"] += int(n_real * weight)
        tokens["padded"] += int((batch["input_ids"].numel() + batch["labels"].numel()) * weight)
    return step_batches, batches


def _record_step(model, validation: list[Example], pad_id: int, step: int, lr: float, losses: dict[str, float],
                 cfg: PretrainConfig, procs: Processes, log_path: Path, log_metrics: training.LogMetrics | None,
                 tokens_per_s: float) -> None:
    """The step's line in train_log.jsonl and its MLflow metrics; the validation loss when one is due."""
    record = {"step": step, "loss": losses["train"], "lr": lr}
    if validation and (step % cfg.eval_every == 0 or step == cfg.max_steps):
        losses["eval"] = evaluate_loss(procs.unwrap(model), validation, pad_id, cfg.batch_size * 2, procs.device,
                                       cfg, procs)
        model.train()
        record["eval_loss"] = losses["eval"]
    if procs.is_main:
        _append_log(log_path, record)
    if log_metrics and procs.is_main and (step % cfg.log_every == 0 or "eval_loss" in record
                                          or step == cfg.max_steps):
        metrics = {"train/loss": losses["train"], "train/lr": lr, "train/tokens_per_s": tokens_per_s}
        if "eval_loss" in record:
            metrics["eval/loss"] = losses["eval"]
        log_metrics(metrics, step)


def _final_losses(losses: dict[str, float], log_path: Path) -> dict[str, float | None]:
    """The last train and validation losses; a run resumed at its last step reports the logged ones. None: no
    validation split."""
    train_loss, eval_loss = losses["train"], losses["eval"]
    if math.isnan(train_loss) and log_path.exists():
        records = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line]
        train_loss = records[-1]["loss"] if records else train_loss
        eval_loss = next((r["eval_loss"] for r in reversed(records) if "eval_loss" in r), eval_loss)
    return {"final_train_loss": None if math.isnan(train_loss) else train_loss,
            "final_eval_loss": None if math.isnan(eval_loss) else eval_loss}


def _speed(tokens: dict[str, int], train_seconds: float, procs: Processes) -> dict[str, float | None]:
    """Real tokens per second of optimizer steps (all processes), the padding share and the steps' seconds."""
    real, padded = procs.sum(tokens["real"]), procs.sum(tokens["padded"])
    seconds = procs.sum(train_seconds) / procs.world
    return {"tokens_per_s": real / seconds if seconds else None,
            "train_seconds": seconds,  # this run's optimizer steps only (no eval, no saving), mean over ranks
            "padding_ratio": 1 - real / padded if padded else None}


def pretrain(student_dir: Path, corpus_dir: Path, cfg: PretrainConfig, out_dir: Path,
             log_metrics: training.LogMetrics | None = None, *, key: str, cache_dir: Path | None = None
             ) -> dict[str, Any]:
    """Train the student on review → teacher response; resume from the latest checkpoint in `out_dir`.

    One process, or each of N under `torchrun` / `accelerate launch` (data parallel: `pretrain.batch_size` is
    the global micro-batch; rank 0 alone writes checkpoints, log, model and result, and calls `log_metrics`).
    The corpus is tokenized once into memory-mapped Arrow under `cache_dir` (default `out_dir/tokenized`), keyed
    by corpus and tokenizer digests. A result finished in `out_dir` under the same stage `key` is returned as it
    is. Returns model_dir (`out_dir/model`), final losses, steps, tokens_per_s (real source + target tokens per
    second of training steps, all processes), padding_ratio and key."""
    out_dir = Path(out_dir)
    result_path = out_dir / "pretrain_result.json"
    if (done := training.finished_result(result_path, key)) is not None:
        return done
    inputs = {"corpus": stored_corpus_digest(corpus_dir), "student": model_digest(student_dir)}

    procs = start_processes()
    procs.local_batch_size(cfg.batch_size, "pretrain.batch_size")  # refuses a batch that does not split evenly
    tokenizer = load_tokenizer(student_dir)
    train, validation = _tokenized_corpus(corpus_dir, tokenizer, student_dir, cfg,
                                          Path(cache_dir) if cache_dir else out_dir / "tokenized", procs)
    lengths = length_keys(train)  # (target, source) lengths from the Arrow columns: 16 bytes per example
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "train_log.jsonl"
    checkpoint, optimizer_state, state = _open_checkpoint(out_dir, procs, cfg, inputs)
    model, _ = load_student(checkpoint or student_dir, device=procs.device)
    optimizer = make_optimizer(model, cfg)
    scheduler = lr_schedule(optimizer, cfg)
    model, optimizer = procs.prepare(model, optimizer)
    training.seed_everything(cfg.seed + procs.rank)  # rank 0 draws what a single process draws; other ranks differ
    position = _resume(checkpoint, state, optimizer_state, optimizer, scheduler, procs, log_path)
    resumed_from_step = position.step
    batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, position.epoch, cfg.group_by_length)
    losses, tokens, train_seconds = {"train": float("nan"), "eval": float("nan")}, {"real": 0, "padded": 0}, 0.0
    model.train()
    progress = tqdm(total=cfg.max_steps, initial=position.step, desc="pretrain", unit="step",
                    disable=not procs.is_main)
    while position.step < cfg.max_steps:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step_batches, batches = _step_batches(train, lengths, batches, position, tokens, tokenizer.pad_token_id,
                                              cfg, procs)
        losses["train"] = _step_loss(model, step_batches, procs, cfg, cfg.gradient_accumulation_steps)
        if cfg.max_grad_norm > 0:
            procs.accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        lr = scheduler.get_last_lr()[0]  # the lr this step used
        optimizer.step()
        scheduler.step()
        position.step += 1
        if procs.device == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - started
        progress.update(1)
        progress.set_postfix(loss=f"{losses['train']:.3f}", refresh=False)  # redrawn with the next update
        _record_step(model, validation, tokenizer.pad_token_id, position.step, lr, losses, cfg, procs, log_path,
                     log_metrics, tokens["real"] * procs.world / max(train_seconds, 1e-9))
        if position.step % cfg.checkpoint_every == 0 or position.step == cfg.max_steps:
            rng_by_rank = procs.gather(training.capture_rng_state())  # every rank's RNG: each resumes with its own
            if procs.is_main:
                save_checkpoint(out_dir, procs.unwrap(model), tokenizer, optimizer, scheduler, position, cfg,
                                inputs, rng_by_rank)
            procs.barrier()
    progress.close()
    result = {
        **_final_losses(losses, log_path), "model_dir": str(out_dir / "model"), "steps": position.step,
        "resumed_from_step": resumed_from_step,
        "epochs": position.epoch + position.batch_in_epoch / max(1, len(batches)),
        **_speed(tokens, train_seconds, procs), "n_train": len(train), "n_validation": len(validation),
        "num_processes": procs.world, "config": _trajectory_config(cfg), "corpus_digest": inputs["corpus"],
        "student_digest": inputs["student"], "key": key,
    }
    if procs.is_main:
        training.save_student(procs.unwrap(model), tokenizer, out_dir / "model")
        with atomic_file(result_path) as handle:
            json.dump(result, handle, indent=2)
    procs.barrier()
    return result


@task(**stage_task_options("pretrain", timeout_hours=72))
def pretrain_stage(student: ModelResult, corpus: CorpusResult, settings: PretrainSettings, placement: Placement,
                   tracking_run_id: str | None = None) -> PretrainResult:
    """Distillation pretraining on teacher responses; resumes from the last checkpoint in its folder."""
    key = current_stage_key()
    out_dir = stage_dir(placement, "pretrain", key)
    log_metrics = metrics_logger(placement, tracking_run_id)
    tokenized_cache = placement.work_dir / "cache" / "tokenized"  # keyed inside by corpus + tokenizer digests
    with model_heavy(placement):
        if placement.train.num_processes > 1:
            from fsa_distill.tasks.stages.launch import run_in_processes

            arguments = {"student_dir": student.model_dir, "corpus_dir": corpus.dataset_dir, "key": key,
                         "cache_dir": tokenized_cache}
            result = run_in_processes("pretrain", arguments, settings, placement.train, out_dir,
                                      placement.train.num_processes)
            replay_train_log(out_dir / "train_log.jsonl", log_metrics)
        else:
            result = pretrain(student.model_dir, corpus.dataset_dir, settings.pretrain, out_dir,
                              log_metrics=log_metrics, key=key, cache_dir=tokenized_cache)
    return PretrainResult(**result, digest=sha256_tree(result["model_dir"]), trained_in_run=tracking_run_id)
