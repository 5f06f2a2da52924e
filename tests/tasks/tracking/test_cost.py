"""tasks/tracking/cost.py: tokens, answers and seconds per stage of one run, as metrics and report rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsa_distill.tasks.tracking.cost import cost_rows, device_kind, run_cost
from fsa_distill.tasks.tracking.report import build_report


def test_cost_adds_up_fanned_out_stages_and_reaches_the_report(tmp_path: Path) -> None:
    generation = {"prompt_tokens": 12_000, "tokens": 3_400, "generated": 40, "cached": 60}
    seconds = {"generate": 30.0, "finetune/atsa/rest14/seed-42": 10.0, "finetune/atsa/rest14/seed-52": 12.5,
               "zero-shot/atsa/rest14": 2.0}
    cost = run_cost(generation, seconds, flow_seconds=60.0)
    assert cost["cost/teacher_prompt_tokens"] == 12_000 and cost["cost/teacher_completion_tokens"] == 3_400
    assert cost["cost/answers_generated"] == 40 and cost["cost/answers_from_store"] == 60
    assert cost["cost/seconds/finetune"] == pytest.approx(22.5) and cost["cost/seconds/zero-shot"] == 2.0
    assert cost["cost/seconds/total"] == 60.0
    rows = cost_rows(cost)
    assert rows[0] == ["teacher prompt tokens", "12,000"] and ["finetune seconds", "22.5"] in rows
    assert device_kind().startswith(("cpu (", "1 × ", "2 × ", "4 × ", "8 × "))
    page = build_report({"cost": {**cost, "device": "cpu (2 cores)"}}, tmp_path / "r").read_text(encoding="utf-8")
    assert "Cost of this run" in page and "answers from store" in page and "cpu (2 cores)" in page
