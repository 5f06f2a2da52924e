"""Data parallelism for the student's training loops, on Accelerate: one `Processes` object per training run.

The same loop runs as one plain process or as one of N processes started by `torchrun` / `accelerate launch`
(Accelerate reads their environment: RANK, WORLD_SIZE, MASTER_ADDR; DDP over NCCL on GPUs, gloo on CPUs).
What the loops need from it, and nothing else:
- the per-process share of a global batch (the config's batch is the global one);
- sums across processes (token counts for the loss, eval sums, throughput), and gathers of small objects
  (RNG states for the checkpoint, decoded predictions);
- which process is the one that writes (checkpoints, logs, results).
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from typing import Any

import torch

from fsa_distill.core.errors import InputError


@dataclass
class Processes:
    """The training processes of one run, as seen from one of them (rank 0 of 1 in a plain process)."""

    accelerator: Any  # accelerate.Accelerator (imported lazily: it is a heavy import)

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> str:
        return self.accelerator.device.type

    def local_batch_size(self, global_batch: int, key: str) -> int:
        """The per-process batch: `global_batch` must split evenly, so the global batch is what the config says."""
        if global_batch % self.world:
            raise InputError(None, key, f"{global_batch} does not split evenly over {self.world} processes; "
                                        f"use a multiple of {self.world}")
        return global_batch // self.world

    def shard(self, indices: list[int]) -> tuple[list[int], float]:
        """This process's contiguous part of a global batch and its weight in the loss (1, or 0 when an epoch's
        short last batch leaves this process nothing: it then repeats one example at weight 0, because every DDP
        process has to run the backward pass that all-reduces the gradients)."""
        size, extra = divmod(len(indices), self.world)
        start = self.rank * size + min(self.rank, extra)
        part = indices[start:start + size + (self.rank < extra)]
        return (part, 1.0) if part else (indices[:1], 0.0)

    def sum(self, value: float) -> float:
        """`value` summed over every process (float64, so token counts stay exact)."""
        if self.world == 1:
            return float(value)
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction="sum").item())

    def gather(self, item: Any) -> list[Any]:
        """One picklable object from each process, in rank order, on every process."""
        if self.world == 1:
            return [item]
        from accelerate.utils import gather_object

        return gather_object([item])

    def broadcast(self, item: Any) -> Any:
        """Rank 0's `item` on every process."""
        if self.world == 1:
            return item
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([item], from_process=0)[0]

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
        """The model wrapped for data parallelism (DDP, or what an `accelerate launch` config asks for) and its
        optimizer; in a plain process both are only moved to the device."""
        return self.accelerator.prepare(model, optimizer)

    def unwrap(self, model: Any) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model)


def die_with_launcher() -> None:
    """Make this rank exit (SIGKILL) when its launcher dies.

    torchrun starts every rank in a session of its own, so killing the launcher's process group (a cancelled
    stage, a killed worker) would leave the ranks training on, and writing, as orphans. Hand-written because
    neither torch nor accelerate offers it: Linux's PR_SET_PDEATHSIG through prctl; elsewhere nothing is done.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the launcher died before the call: the signal will never come
        os._exit(1)


def start_processes() -> Processes:
    """Join the run's processes (a no-op in a plain process): on the CPU when there is no GPU."""
    from accelerate import Accelerator

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        die_with_launcher()
    return Processes(Accelerator(cpu=not torch.cuda.is_available()))


def interleave(parts: list[list[Any]]) -> list[Any]:
    """Undo a strided split (`items[rank::world]` on each process): the items in their original order."""
    merged: list[Any] = []
    for position in range(max((len(part) for part in parts), default=0)):
        merged.extend(part[position] for part in parts if position < len(part))
    return merged
