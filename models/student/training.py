"""The student's training toolbox, shared by pretraining, fine-tuning, the student build and the benchmarks:
seeding, RNG state, device and dtype choice, and saving (data → batches is models/student/batching.py).

Written once (torchtune keeps its recipes' helpers the same way): exact resume depends on these agreeing between
a run and its resumed continuation, which is easier to keep true in one place.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsa_distill.core.files import atomic_dir

LogMetrics = Callable[[dict[str, float], int | None], None]


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
