"""Fine-tune the (pretrained) student on ATSA / ACSA, one dataset × seed per call, HF-examples style.

source = the benchmark sentence, target = `benchmark.targets.linearise` ("term | polarity ; ..."). AdamW with a
linear decay, greedy decoding of dev after each epoch, the best-dev-F1 model kept as an HF folder, then test
(test + hard_test) decoded once with it and scored on every view. The paper's protocol: 20 epochs, lr 3e-4,
batch 16, 10 seeds, ≤100 new tokens. Each epoch ends with a `last/` checkpoint, so an interrupted run resumes
at the epoch boundary with the same result as an uninterrupted one.

Data parallel like pretraining (tasks/stages/pretrain.py): under `torchrun` / `accelerate launch` each of N processes
takes its part of every global batch of `finetune.batch_size`, the loss is the global token mean, dev and test
decoding are split over the processes and gathered, and rank 0 alone writes.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from prefect import task
from pydantic import Field
from tqdm.auto import tqdm

from fsa_distill.benchmark.data import auxiliary_train, load_task_data
from fsa_distill.core.config import DataConfig, DistillConfig, FinetuneConfig, View
from fsa_distill.core.digests import sha256_tree
from fsa_distill.core.files import atomic_file
from fsa_distill.models.student import training
from fsa_distill.models.student.batching import collate, epoch_batches, tokenize_pairs
from fsa_distill.models.student.decoding import greedy_decode
from fsa_distill.models.student.distributed import Processes, interleave, start_processes
from fsa_distill.models.student.load import load_student
from fsa_distill.tasks.stages.keys import Placement, StageSettings
from fsa_distill.tasks.stages.records import ModelResult, Scores
from fsa_distill.tasks.stages.stage_task import (
    current_stage_key,
    metrics_logger,
    model_heavy,
    stage_dir,
    stage_task_options,
)

FINETUNE_SEED_STRIDE = 1_000  # epoch order seed = seed * 1_000 + epoch (fine-tuning's value since the start)
METRICS = ("precision", "recall", "f1")


class FinetuneSettings(StageSettings):
    """What fine-tuning reads: the benchmark's splits, the recipe and the test views it scores."""

    data: DataConfig
    finetune: FinetuneConfig
    views: list[View]

    @classmethod
    def of(cls, config: DistillConfig) -> FinetuneSettings:
        return cls(data=config.data, finetune=config.finetune, views=config.evaluate.views)


class FinetuneResult(ModelResult):
    """One (dataset, seed) fine-tuning run: its best-dev model and that model's test scores per view."""

    dataset: str  # task/dataset, e.g. atsa/rest14
    task: str
    seed: int
    best_dev_f1: float
    best_epoch: int
    scores: Scores
    predictions_path: Path
    dev_history: list[dict[str, float | int]]
    n_train: int
    n_dev: int
    n_test: int
    num_processes: int = 1
    # benchmark/variety.py: distinct outputs, the top output's share
    variety: dict[str, float | int | str] = Field(default_factory=dict)
    train_tokens_per_s: float | None = None  # real (unpadded) tokens per second of the epochs this run trained


def _optimizer_and_schedule(model: torch.nn.Module, ft: Any, total_steps: int) -> tuple[Any, Any]:
    """AdamW (the cross-attention at its own rate) with the learning rate decaying linearly to 0 at the end."""
    from transformers import get_linear_schedule_with_warmup

    groups = training.parameter_groups(model, ft.learning_rate, ft.cross_attention_learning_rate)
    optimizer = training.adamw(groups, lr=ft.learning_rate, fused=True)
    return optimizer, get_linear_schedule_with_warmup(optimizer, 0, total_steps)


def score_views(task: str, sentences: list[dict[str, Any]], predictions: list[str], views: list[str]
                ) -> dict[str, dict[str, float]]:
    from fsa_distill.benchmark.scorer import score_predictions

    return {view: score_predictions(task, sentences, predictions, view=view) for view in views}


def decode_split(procs: Processes, model, tokenizer, texts: list[str], ft, progress: bool = False,
                 desc: str = "predict") -> list[str]:
    """Greedy outputs for `texts` in their order, each process decoding every N-th text."""
    part = greedy_decode(procs.unwrap(model), tokenizer, texts[procs.rank::procs.world], ft.eval_batch_size,
                         ft.max_new_tokens, ft.max_source_length, progress=progress and procs.is_main, desc=desc)
    return interleave(procs.gather(part))


def token_loss_sum(model, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> torch.Tensor:
    """The batch's summed target-token cross-entropy. transformers' seq2seq models compute the plain loss only,
    so with label smoothing it is torch's cross-entropy over the model's logits (the model is handed the
    decoder inputs instead of the labels, so it does not compute a loss of its own as well)."""
    labels = batch["labels"]
    if not label_smoothing:
        return model(**batch).loss.float() * (labels != -100).sum()
    inputs = {name: value for name, value in batch.items() if name != "labels"}
    inputs["decoder_input_ids"] = getattr(model, "module", model).prepare_decoder_input_ids_from_labels(labels=labels)
    logits = model(**inputs).logits.float()
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100,
                                             label_smoothing=label_smoothing, reduction="sum")


def train_step(model, optimizer, scheduler, procs: Processes, batch: dict[str, torch.Tensor], weight: float,
               bf16: str = "off", label_smoothing: float = 0.0) -> float:
    """One optimizer step on this process's part of a global batch; the loss is the global token mean (the
    token sum over every process / the all-reduced token count, times N because DDP averages gradients)."""
    n_tokens = (batch["labels"] != -100).sum()
    global_tokens = max(procs.sum(float(n_tokens) * weight), 1.0)
    with training.bf16_autocast(bf16, procs.device):
        token_sum = token_loss_sum(model, batch, label_smoothing)
    procs.accelerator.backward(token_sum * (weight * procs.world / global_tokens))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return procs.sum(float(token_sum.detach()) * weight) / global_tokens


def _train_epoch(procs: Processes, model, optimizer, scheduler, train: list[tuple[list[int], list[int]]],
                 lengths: list[int], pad_id: int, ft: Any, seed: int, epoch: int, desc: str) -> tuple[float, int]:
    """One pass over the train pairs in the epoch's seeded order: (summed batch losses, real tokens seen)."""
    model.train()
    batches = epoch_batches(lengths, ft.batch_size, seed, epoch, group_by_length=ft.group_by_length,
                            seed_stride=FINETUNE_SEED_STRIDE)
    epoch_loss, epoch_tokens = 0.0, 0
    for global_indices in tqdm(batches, desc=desc, unit="batch", leave=False, disable=not procs.is_main):
        indices, weight = procs.shard(global_indices)
        batch, real_tokens = collate([train[i] for i in indices], pad_id)
        epoch_tokens += real_tokens
        epoch_loss += train_step(model, optimizer, scheduler, procs,
                                 {k: v.to(procs.device) for k, v in batch.items()}, weight, ft.bf16,
                                 ft.label_smoothing)
    return epoch_loss, epoch_tokens


def _dev_f1(procs: Processes, model, tokenizer, task: str, dev: list[dict[str, Any]], ft: Any, desc: str) -> float:
    """Normal-view F1 on the dev sentences, the number the best epoch is chosen on."""
    with training.rng_untouched():  # decoding must not shift the training randomness
        predictions = decode_split(procs, model, tokenizer, [s["sentence"] for s in dev], ft, progress=True,
                                   desc=desc)
    return score_views(task, dev, predictions, ["normal"])["normal"]["f1"]


def _save_last(procs: Processes, model, tokenizer, optimizer, last_dir: Path, state: dict[str, Any]) -> None:
    """The resumable end-of-epoch checkpoint in `last/`: model, optimizer and every process's RNG state."""
    rng_states = procs.gather(training.capture_rng_state())
    if procs.is_main:
        with training.saving_student(procs.unwrap(model), tokenizer, last_dir) as tmp:
            training.save_training_state(tmp, optimizer, {**state, "rng_by_rank": rng_states})
    procs.barrier()


def _score_best_on_test(procs: Processes, model, tokenizer, best_dir: Path, task: str, test: list[dict[str, Any]],
                        settings: FinetuneSettings, out_dir: Path, log_metrics: training.LogMetrics | None
                        ) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """Decode the test split with the best-dev checkpoint: (scores per view, output variety, predictions file,
    one JSON line per gold sentence in gold order)."""
    from fsa_distill.benchmark.variety import output_variety

    if not best_dir.exists() and procs.is_main:  # epochs = 0: the student as given is the "best" model
        training.save_student(procs.unwrap(model), tokenizer, best_dir)
    procs.barrier()
    best_model, _ = load_student(best_dir, device=procs.device)
    predictions = decode_split(procs, best_model, tokenizer, [s["sentence"] for s in test], settings.finetune,
                               progress=True)
    predictions_path = out_dir / "test_predictions.jsonl"
    if procs.is_main:
        with atomic_file(predictions_path) as handle:
            for prediction in predictions:
                handle.write(json.dumps({"prediction": prediction}, ensure_ascii=False) + "\n")
    scores = score_views(task, test, predictions, list(settings.views))
    variety = output_variety(predictions)
    if log_metrics and procs.is_main:
        log_metrics({f"test/{view}_{name}": scores[view][name] for view in scores for name in METRICS}, None)
        log_metrics({f"variety/{name}": value for name, value in variety.items() if name != "top_output"}, None)
    return scores, variety, predictions_path


def _train_sources_and_targets(task: str, dataset: str, splits: dict[str, list[dict[str, Any]]],
                               settings: FinetuneSettings) -> tuple[list[str], list[str]]:
    """The dataset's own train sentences as they are, then the auxiliary datasets' with their task marked."""
    from fsa_distill.benchmark.targets import linearise, marked_source

    sources = [s["sentence"] for s in splits["train"]]
    targets = [linearise(s, task) for s in splits["train"]]
    for aux_task, sentence in auxiliary_train(task, dataset, settings.finetune.auxiliary_datasets, settings.data,
                                              splits["dev"] + splits["test"]):
        sources.append(marked_source(sentence["sentence"], aux_task))
        targets.append(linearise(sentence, aux_task))
    return sources, targets


def finetune(model_dir: Path, task: str, dataset: str, seed: int, settings: FinetuneSettings, out_dir: Path,
             log_metrics: training.LogMetrics | None = None, *, key: str) -> dict[str, Any]:
    """Fine-tune on `task/dataset` with `seed`; return model_dir (best), best_dev_f1, scores per view,
    predictions_path (test JSONL, one line per gold sentence in gold order) and the dev history. `key` is the
    stage's cache key (tasks/stages/keys.py `stage_key`): a result finished in `out_dir` under the same
    key is returned as it is, and only an epoch checkpoint made under it is resumed from."""
    ft = settings.finetune
    out_dir = Path(out_dir)
    result_path = out_dir / "finetune_result.json"
    if (done := training.finished_result(result_path, key)) is not None:
        return done

    splits = load_task_data(task, dataset, settings.data)
    procs = start_processes()
    procs.local_batch_size(ft.batch_size, "finetune.batch_size")  # refuses a batch that does not split evenly
    training.seed_everything(seed + procs.rank)  # rank 0 draws what a single process draws
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    has_state = (last_dir / training.STATE_FILE).exists()
    optimizer_state, state = training.load_training_state(last_dir) if has_state else (None, None)
    resuming = state is not None and state["key"] == key  # after the last finished epoch of this same run
    model, tokenizer = load_student(last_dir if resuming else model_dir, device=procs.device, dropout=ft.dropout)
    sources, targets = _train_sources_and_targets(task, dataset, splits, settings)
    train = tokenize_pairs(tokenizer, sources, targets, ft.max_source_length, ft.max_target_length)
    lengths = [len(source) for source, _ in train]  # the sort key when group_by_length (targets are short)
    steps_per_epoch = math.ceil(len(train) / ft.batch_size)
    total_steps = max(1, ft.epochs * steps_per_epoch)
    optimizer, scheduler = _optimizer_and_schedule(model, ft, total_steps)
    model, optimizer = procs.prepare(model, optimizer)
    epoch, best_f1, best_epoch, history = 0, -1.0, -1, []
    if resuming:
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(state["scheduler"])
        training.resume_rng(state, last_dir, procs.world, procs.rank)
        epoch, best_f1, best_epoch, history = (state["epoch"], state["best_f1"], state["best_epoch"],
                                               state["history"])
    else:
        procs.barrier()  # every rank has read `last/` before rank 0 may remove `best/`
        if procs.is_main:
            shutil.rmtree(best_dir, ignore_errors=True)  # a best model from another run must not survive

    train_tokens, train_seconds = 0, 0.0  # this process's training speed (epochs run here, not resumed ones)
    while epoch < ft.epochs:
        epoch_started = time.perf_counter()
        desc = f"finetune {dataset} seed {seed} epoch {epoch + 1}/{ft.epochs}"
        epoch_loss, epoch_tokens = _train_epoch(procs, model, optimizer, scheduler, train, lengths,
                                                tokenizer.pad_token_id, ft, seed, epoch, desc)
        epoch += 1
        train_tokens += epoch_tokens
        train_seconds += time.perf_counter() - epoch_started
        record: dict[str, Any] = {"epoch": epoch, "train_loss": epoch_loss / max(1, steps_per_epoch)}
        if epoch % ft.eval_every_epochs == 0 or epoch == ft.epochs:
            record["dev_f1"] = dev_f1 = _dev_f1(procs, model, tokenizer, task, splits["dev"], ft,
                                                f"dev {dataset} epoch {epoch}")
            if dev_f1 > best_f1:
                best_f1, best_epoch = dev_f1, epoch
                if procs.is_main:
                    training.save_student(procs.unwrap(model), tokenizer, best_dir)
        history.append(record)
        _save_last(procs, model, tokenizer, optimizer, last_dir, {
            "key": key, "epoch": epoch, "best_f1": best_f1, "best_epoch": best_epoch, "history": history,
            "scheduler": scheduler.state_dict()})
        if log_metrics and procs.is_main:
            log_metrics({f"finetune/{name}": value for name, value in record.items() if name != "epoch"}, epoch)
    scores, variety, predictions_path = _score_best_on_test(procs, model, tokenizer, best_dir, task, splits["test"],
                                                            settings, out_dir, log_metrics)
    result = {
        "model_dir": str(best_dir), "best_dev_f1": max(best_f1, 0.0), "best_epoch": best_epoch, "scores": scores,
        "predictions_path": str(predictions_path), "dev_history": history, "task": task, "dataset": dataset,
        "seed": seed, "n_train": len(train), "n_dev": len(splits["dev"]), "n_test": len(splits["test"]),
        "num_processes": procs.world, "key": key, "variety": variety,
        "train_tokens_per_s": train_tokens / train_seconds if train_seconds else None,
    }
    if procs.is_main:
        with atomic_file(result_path) as handle:
            json.dump(result, handle, indent=2)
        shutil.rmtree(last_dir, ignore_errors=True)  # optimizer state is 2x the model: not kept once done
    procs.barrier()
    return result


@task(**stage_task_options("finetune", timeout_hours=24))
def finetune_stage(model: ModelResult, dataset: str, seed: int, settings: FinetuneSettings, placement: Placement,
                   tracking_run_id: str | None = None) -> FinetuneResult:
    """Fine-tune one (dataset, seed) and score its best-dev checkpoint on the test views."""
    task_name, dataset_name = dataset.split("/")
    key = current_stage_key()
    out_dir = stage_dir(placement, "finetune", key)
    log_metrics = metrics_logger(placement, tracking_run_id)
    with model_heavy(placement):
        if placement.train.finetune_num_processes > 1:
            from fsa_distill.tasks.stages.launch import run_in_processes

            arguments = {"model_dir": model.model_dir, "task": task_name, "dataset": dataset_name, "seed": seed,
                         "key": key}
            result = run_in_processes("finetune", arguments, settings, placement.train, out_dir,
                                      placement.train.finetune_num_processes)
            if log_metrics:  # the processes do not log to MLflow: rank 0's history is logged once they are done
                for record in result["dev_history"]:
                    log_metrics({f"finetune/{k}": v for k, v in record.items() if k != "epoch"}, record["epoch"])
        else:
            result = finetune(model.model_dir, task_name, dataset_name, seed, settings, out_dir,
                              log_metrics=log_metrics, key=key)
    return FinetuneResult(
        **{**result, "dataset": dataset},  # the function names the dataset alone; the pipeline names task/dataset
        digest=sha256_tree(result["model_dir"]),
        trained_in_run=tracking_run_id,
    )
