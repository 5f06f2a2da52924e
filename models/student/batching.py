"""Data → batches for the student: tokenization of (source, target) pairs, the epoch order with length-grouped
batches, and padding. Pretraining and fine-tuning both batch with it (fine-tuning once imported it from the
pretraining module).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

Example = tuple[list[int], list[int]]  # (source ids, target ids)

MEGABATCH_FACTOR = 50  # length-sort within 50 batches' worth of random examples (as HF's LengthGroupedSampler)
PRETRAIN_SEED_STRIDE = 100_003  # epoch-order seed = seed * stride + epoch (see `epoch_batches`)


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
