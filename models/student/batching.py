"""Data → batches for the student: tokenization of (source, target) pairs, the epoch order with length-grouped
batches, and padding. Pretraining and fine-tuning both batch with it (fine-tuning once imported it from the
pretraining module).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
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


class EpochBatches(Sequence[list[int]]):
    """The batches of one epoch as two integer arrays (example order, batch starts): 16 bytes per example
    instead of a Python list of lists, so a 2M-example epoch costs ~16 MB."""

    def __init__(self, order: np.ndarray, starts: np.ndarray) -> None:
        self.order, self.starts = order, starts
        self.ends = np.append(starts[1:], len(order)) if len(starts) else starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> list[int]:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self.order[self.starts[index]:self.ends[index]].tolist()

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented


def _sort_keys(lengths: Any) -> np.ndarray:
    """One integer sort key per example: a length, or (target length, source length) pairs folded into one
    integer that orders like the pair."""
    keys = np.asarray(lengths, dtype=np.int64)
    if keys.ndim == 2:
        keys = keys[:, 0] * (int(keys[:, 1].max(initial=0)) + 1) + keys[:, 1]
    return keys


def epoch_batches(lengths: Any, batch_size: int, seed: int, epoch: int, group_by_length: bool,
                  seed_stride: int = PRETRAIN_SEED_STRIDE) -> EpochBatches:
    """The batches of one epoch, as example indices. A pure function of its arguments (what resume relies on).

    The order comes from a generator seeded with `seed * seed_stride + epoch`: pretraining uses 100_003,
    fine-tuning 1_000 (each stage's historical value, kept so their results do not change).
    `lengths` (a list or an array, e.g. the tokenized corpus's length columns) are sort keys: pretraining passes
    (target length, source length), because source and target are padded separately and the target is the
    longer, costlier side (decoder and softmax over the vocabulary).
    Length grouping draws batches from length-sorted "megabatches" (as HF's LengthGroupedSampler); the sort is
    stable and descending, the order Python's `sorted(..., reverse=True)` gives, done in numpy.
    """
    generator = torch.Generator().manual_seed(seed * seed_stride + epoch)
    order = torch.randperm(len(lengths), generator=generator).numpy()
    if not group_by_length:
        return EpochBatches(order, np.arange(0, len(order), batch_size))
    keys = _sort_keys(lengths)
    mega = batch_size * MEGABATCH_FACTOR
    sorted_order = np.empty_like(order)
    starts = []
    for start in range(0, len(order), mega):
        chunk = order[start:start + mega]
        sorted_order[start:start + len(chunk)] = chunk[np.argsort(-keys[chunk], kind="stable")]
        starts.extend(range(start, start + len(chunk), batch_size))
    starts_array = np.asarray(starts, dtype=np.int64)
    ends = np.append(starts_array[1:], len(order))
    shuffled = torch.randperm(len(starts_array), generator=generator).numpy()
    # Lay the shuffled batches out one after another, so that the epoch is again (order, starts).
    sizes = (ends - starts_array)[shuffled]
    new_starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(sizes) else starts_array
    pieces = [sorted_order[starts_array[i]:ends[i]] for i in shuffled]
    return EpochBatches(np.concatenate(pieces) if pieces else sorted_order, new_starts)


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
