"""The student's training toolbox, shared by pretraining, fine-tuning, the student build and the benchmarks:
seeding, RNG state, device and dtype choice, saving and checkpoint state (data → batches: batching.py).

Written once (torchtune keeps its recipes' helpers the same way): exact resume depends on these agreeing between
a run and its resumed continuation, which is easier to keep true in one place.
"""

from __future__ import annotations

import json
import pickle
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsa_distill.core.errors import InputError
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


def adamw(parameters: Any, lr: float, weight_decay: float = 0.0, fused: bool = False) -> torch.optim.Optimizer:
    """torch's AdamW. `fused`: its fused kernel, which on this project's 2-core CPU took 0.17-0.4 s a step for the
    37M-parameter MiniLM-BART student against 1.3-1.4 s for the default per-parameter loop. Fine-tuning uses it;
    pretraining does not, because its losses with N data-parallel processes must match one process's within 1e-4
    (tests/test_student_ddp*.py, `bench train --part ddp`), and the fused kernel's rounding differs with the
    thread count (6e-3 apart after 20 t5-tiny steps at lr 3e-3)."""
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, fused=fused)


# The decoder's cross-attention by its name in BART (the warm-started MiniLM student: the block and its LayerNorm,
# both fresh) and in T5.
CROSS_ATTENTION_NAMES = (".encoder_attn", ".EncDecAttention.")


def parameter_groups(model: torch.nn.Module, lr: float, cross_attention_lr: float | None) -> list[dict[str, Any]]:
    """Optimizer groups: the decoder's cross-attention at `cross_attention_lr` (None: `lr`), the rest at `lr`.

    Why: a student warm-started from an encoder (warm_start.py) starts with every block pretrained except the
    cross-attention, and at the pretrained blocks' gentle rate that fresh block learns slowly (rest14 dev F1 x 100
    after 300 fine-tuning steps: 31.9 with 1e-4 everywhere, 41.2 with 1e-3 for the cross-attention)."""
    named = [(name, param) for name, param in model.named_parameters() if param.requires_grad]
    cross = [param for name, param in named if any(part in name for part in CROSS_ATTENTION_NAMES)]
    rest = [param for name, param in named if not any(part in name for part in CROSS_ATTENTION_NAMES)]
    groups = [{"params": rest, "lr": lr}]
    if cross:
        groups.append({"params": cross, "lr": cross_attention_lr if cross_attention_lr is not None else lr})
    return groups


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


# ------------------------------------------------------------------------------------- checkpoints

OPTIMIZER_FILE = "optimizer.pt"  # tensors only: loaded with torch.load(weights_only=True)
STATE_FILE = "trainer_state.json"  # everything else (position, scheduler, RNG, run identity): plain JSON


def finished_result(result_path: Path, key: str) -> dict[str, Any] | None:
    """The result a training stage wrote in an earlier run under the same stage key, if its model is still there:
    the stage returns it as it is instead of training again."""
    if not result_path.exists():
        return None
    done = json.loads(result_path.read_text(encoding="utf-8"))
    return done if done.get("key") == key and Path(done["model_dir"]).exists() else None


def rng_by_rank(state: dict[str, Any]) -> list[Any]:
    """Every process's RNG state in a checkpoint's JSON state (one entry for a single-process checkpoint)."""
    return state.get("rng_by_rank", [state.get("rng")])


def resume_rng(state: dict[str, Any], folder: Path, world: int, rank: int) -> None:
    """Give this process the RNG state it had when the checkpoint was saved. A checkpoint resumes only with the
    number of processes that made it: each draws its own batches and dropout masks."""
    saved = rng_by_rank(state)
    if len(saved) != world:
        raise InputError(folder, None, f"checkpoint was made by {len(saved)} process(es), this run has {world}; "
                                       f"resume with {len(saved)} or use a new output folder")
    restore_rng_state(saved[rank])


def save_training_state(folder: Path, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Write a resumable training state into `folder` (a checkpoint being saved): the optimizer's tensors with
    torch.save, the rest as JSON, so that loading it never has to unpickle arbitrary objects."""
    torch.save(optimizer.state_dict(), Path(folder) / OPTIMIZER_FILE)
    (Path(folder) / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")


def load_training_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(optimizer state dict, JSON state) of a checkpoint; InputError for a checkpoint that is not one of ours
    (an older layout) or holds pickled objects other than tensors, which are refused, never executed."""
    folder = Path(folder)
    if not (folder / STATE_FILE).exists() or not (folder / OPTIMIZER_FILE).exists():
        raise InputError(folder, None, f"not a resumable checkpoint (no {STATE_FILE} / {OPTIMIZER_FILE}); "
                                       "delete it or use a new output folder")
    try:
        optimizer_state = torch.load(folder / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise InputError(folder / OPTIMIZER_FILE, None, "holds pickled objects other than tensors; refused "
                                                        f"(torch.load weights_only): {str(error).splitlines()[0]}"
                         ) from None
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(folder / STATE_FILE, None, f"corrupt training state: {error}") from None
    return optimizer_state, state
