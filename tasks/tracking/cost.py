"""What a run cost: the teacher's prompt and completion tokens, answers generated vs served from the answer store,
seconds per stage and the device it ran on. Recorded as `cost/...` metrics and a `cost.device` tag on the parent
MLflow run, so the report and the history page read the same figures.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

COST_PREFIX = "cost/"
DEVICE_TAG = "cost.device"


def device_kind() -> str:
    """The accelerator the student trained on: the CUDA device's name, else "cpu" with its core count."""
    import os

    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"
    return f"cpu ({os.cpu_count()} cores)"


def stage_group(label: str) -> str:
    """`finetune/atsa/rest14/seed-42` → `finetune`: the seconds of a stage's fanned-out runs add up."""
    return label.split("/")[0]


def run_cost(generation: Mapping[str, Any], stage_seconds: Mapping[str, float], flow_seconds: float
             ) -> dict[str, float]:
    """`cost/...` metrics from the generate stage's figures and each stage's seconds (its label → seconds)."""
    seconds: dict[str, float] = defaultdict(float)
    for label, value in stage_seconds.items():
        seconds[stage_group(label)] += value
    return {
        f"{COST_PREFIX}teacher_prompt_tokens": float(generation.get("prompt_tokens", 0)),
        f"{COST_PREFIX}teacher_completion_tokens": float(generation.get("tokens", 0)),
        f"{COST_PREFIX}answers_generated": float(generation.get("generated", 0)),
        f"{COST_PREFIX}answers_from_store": float(generation.get("cached", 0)),
        **{f"{COST_PREFIX}seconds/{stage}": value for stage, value in seconds.items()},
        f"{COST_PREFIX}seconds/total": float(flow_seconds),
    }


def cost_rows(metrics: Mapping[str, float]) -> list[list[str]]:
    """(figure, value) rows of the `cost/...` metrics, tokens and answers first, then seconds per stage."""
    figures = {key.removeprefix(COST_PREFIX): value for key, value in metrics.items() if key.startswith(COST_PREFIX)}
    counts = [[name.replace("_", " "), f"{value:,.0f}"] for name, value in figures.items()
              if not name.startswith("seconds/")]
    seconds = [[f"{name.removeprefix('seconds/')} seconds", f"{value:,.1f}"] for name, value in figures.items()
               if name.startswith("seconds/")]
    return counts + seconds
