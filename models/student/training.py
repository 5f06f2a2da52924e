"""The student's training toolbox, shared by pretraining, fine-tuning, the student build and the benchmarks.

One module so that seeding, RNG state, device and dtype choice, saving, tokenization and batching are written
once (torchtune keeps its recipes' helpers the same way). Exact resume depends on several of these agreeing
between a run and its resumed continuation, which is easier to keep true in one place.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsa_distill.core.files import atomic_dir

LogMetrics = Callable[[dict[str, float], int | None], None]
Example = tuple[list[int], list[int]]  # (source ids, target ids)

MEGABATCH_FACTOR = 50  # length-sort within 50 batches' worth of random examples (as HF's LengthGroupedSampler)
PRETRAIN_SEED_STRIDE = 100_003  # epoch-order seed = seed * stride + epoch (see `epoch_batches`)


# ------------------------------------------------------------------------------------ device, dtype

def pick_device() -> str:
    """The one GPU when there is one, else the CPU (multi-device runs will come through `accelerate launch`)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_autocast(mode: str, device: str) -> torch.autocast:
    """bf16 autocast: `auto` = on CUDA with bf16 support only; `on` = wherever torch supports it; `off`."""
    use = mode == "on" or (mode == "auto" and device == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=use)


# ------------------------------------------------------------------------------------------- RNG

def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and every CUDA device (transformers' helper; same draws as seeding each)."""
    from transformers import set_seed

    set_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Every RNG state as plain JSON values (lists of ints), so a checkpoint needs no pickle to hold it.

    Hand-written because neither transformers nor accelerate exposes a capture/restore pair: their trainers
    pickle the raw state objects inside their own checkpoint code.
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state().tolist(),
        "cuda": [state.tolist() for state in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else None,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


@contextmanager
def rng_untouched() -> Iterator[None]:
    """Whatever runs inside (e.g. decoding dev mid-training) leaves every RNG as it found it."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


# ------------------------------------------------------------------------------------------ saving

@contextmanager
def saving_student(model: Any, tokenizer: Any, out_dir: Path) -> Iterator[Path]:
    """Write model + tokenizer into a temp folder, yield it for extra files, then swap it in at `out_dir`.

    A crash at any point leaves the previous `out_dir` (or none), never half a model.
    """
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        yield tmp


def save_student(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Model + tokenizer as a loadable HF folder at `out_dir`, all or nothing."""
    with saving_student(model, tokenizer, out_dir):
        pass
    return Path(out_dir)


# ------------------------------------------------------------------------------------ tokens, batches

def tokenize_pairs(tokenizer: Any, sources: list[str], targets: list[str], max_source: int, max_target: int,
                   chunk: int = 1000) -> list[Example]:
    """Token ids per example, truncated to the configured lengths (each keeps its closing </s>).

    Texts are already in model form (`[NL]` for newlines): the corpus stage converts responses, and the
    benchmark sentences of fine-tuning are single lines.
    """
    examples: list[Example] = []
    for start in range(0, len(sources), chunk):
        src = tokenizer(sources[start:start + chunk], max_length=max_source, truncation=True)["input_ids"]
        tgt = tokenizer(targets[start:start + chunk], max_length=max_target, truncation=True)["input_ids"]
        examples.extend(zip(src, tgt, strict=True))
    return examples


def epoch_batches(lengths: Sequence[Any], batch_size: int, seed: int, epoch: int, group_by_length: bool,
                  seed_stride: int = PRETRAIN_SEED_STRIDE) -> list[list[int]]:
    """The batches of one epoch, as example indices. A pure function of its arguments (what resume relies on).

    The order comes from a generator seeded with `seed * seed_stride + epoch`: pretraining uses 100_003,
    fine-tuning 1_000 (each stage's historical value, kept so their results do not change).
    `lengths` are sort keys: pretraining passes (target length, source length), because source and target are
    padded separately and the target is the longer, costlier side (decoder and softmax over the vocabulary).
    Length grouping draws batches from length-sorted "megabatches" (as HF's LengthGroupedSampler).
    """
    generator = torch.Generator().manual_seed(seed * seed_stride + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * MEGABATCH_FACTOR
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda index: lengths[index], reverse=True)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def collate(examples: list[Example], pad_id: int, pad_to: tuple[int, int] | None = None
            ) -> tuple[dict[str, torch.Tensor], int]:
    """Pad a batch (to its own longest sequences, or to `pad_to` = fixed lengths); return it and its real tokens.

    Hand-written rather than `DataCollatorForSeq2Seq`: the fixed-length mode and the real-token count are what
    the padding benchmark measures, and labels are padded with -100 so padding never counts in the loss.
    """
    src_len = pad_to[0] if pad_to else max(len(src) for src, _ in examples)
    tgt_len = pad_to[1] if pad_to else max(len(tgt) for _, tgt in examples)
    input_ids = torch.full((len(examples), src_len), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), tgt_len), -100, dtype=torch.long)
    for row, (src, tgt) in enumerate(examples):
        input_ids[row, :len(src)] = torch.tensor(src)
        labels[row, :len(tgt)] = torch.tensor(tgt)
    real_tokens = sum(len(src) + len(tgt) for src, tgt in examples)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pad_id).long(), "labels": labels}, real_tokens
