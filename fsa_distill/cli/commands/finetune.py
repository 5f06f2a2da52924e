"""`fsa-distill finetune`: fine-tuning of one dataset × seed alone, from a resolved config, with no Prefect or
MLflow; a plain function call between explicit folders (the shape `accelerate launch` / `torchrun` need)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.cli.console import print_json, user_errors
from fsa_distill.cli.options import ConfigFile, JsonSummary, Overrides, Profile

DATASET_SPEC = re.compile(r"^(atsa|acsa)/([\w.-]+)$")
SUMMARY_KEYS = ("model_dir", "best_dev_f1", "best_epoch", "scores", "predictions_path", "task", "dataset", "seed",
                "n_train", "n_dev", "n_test")


def finetune(
    model: Annotated[Path, typer.Option(help="Student model folder (HF format), e.g. pretrain's model/.")],
    dataset: Annotated[str, typer.Option(help="task/dataset, e.g. atsa/rest14 or acsa/rest16.")],
    out: Annotated[Path, typer.Option(help="Output folder: best/, test_predictions.jsonl, finetune_result.json.")],
    seed: Annotated[int | None, typer.Option(help="Seed (default: the first of finetune.seeds).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder (else data.data_dir).")] = None,
    profile: Profile = "demo",
    config_file: ConfigFile = None,
    overrides: Overrides = None,
    as_json: JsonSummary = False,
) -> None:
    """Fine-tune on one dataset with one seed, keep the best-dev model and score it on the test views;
    rerunning resumes after the last finished epoch (or returns the finished result)."""
    with user_errors():
        from fsa_distill.core.config import resolve_config
        from fsa_distill.core.digests import sha256_json, sha256_tree
        from fsa_distill.core.errors import InputError
        from fsa_distill.core.paths import check_output_dir
        from fsa_distill.models.student.load import check_student_dir
        from fsa_distill.tasks.stages.finetune import finetune as finetune_stage

        config = resolve_config(profile, config_file, overrides or [])
        if data_dir is not None:
            config.data.data_dir = data_dir
        match = DATASET_SPEC.match(dataset)
        if not match:
            raise InputError(dataset, "--dataset", "expected task/dataset, e.g. atsa/rest14 or acsa/rest16")
        check_student_dir(model)
        check_output_dir(out)  # before any model loads: a file or an unwritable place fails now, not at epoch 1
        if seed is None and not config.finetune.seeds:
            raise InputError(None, "--seed", "finetune.seeds is empty: give a seed")
        chosen_seed = config.finetune.seeds[0] if seed is None else seed
        # Without Prefect there is no flow key (tasks/stages/keys.py): this one covers what the stage reads
        # (as its StageSpec declares) and its inputs, so a rerun into the same --out returns the result or
        # resumes.
        key = sha256_json({"stage": "finetune", "data": config.data.model_dump(mode="json"),
                           "finetune": config.finetune.model_dump(mode="json"), "views": config.evaluate.views,
                           "model": sha256_tree(model), "dataset": dataset, "seed": chosen_seed})
        result = finetune_stage(model, match.group(1), match.group(2), chosen_seed, config, out, key=key)
    summary = {key: result.get(key) for key in SUMMARY_KEYS}
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun / accelerate launch, rank 0 alone reports
        return
    if as_json:
        print_json(summary)
    else:
        scores = "  ".join(f"{view} F1 {100 * score['f1']:.2f}" for view, score in summary["scores"].items())
        typer.echo(f"{dataset} seed {chosen_seed}: best dev F1 {100 * summary['best_dev_f1']:.2f} "
                   f"(epoch {summary['best_epoch']}); test {scores}; model at {summary['model_dir']}")
