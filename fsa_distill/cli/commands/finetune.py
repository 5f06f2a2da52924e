"""`fsa-distill finetune`: fine-tuning of one dataset × seed alone, from a resolved config, with no Prefect server
or flow and no MLflow; a plain function call between explicit folders (the shape `accelerate launch` / `torchrun`
need)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.cli.console import print_rank_zero_summary, user_errors
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
        from fsa_distill.core.digests import sha256_tree
        from fsa_distill.core.errors import InputError
        from fsa_distill.core.paths import check_output_dir
        from fsa_distill.models.student.load import check_student_dir
        from fsa_distill.tasks.stages import finetune as stage
        from fsa_distill.tasks.stages.keys import stage_key

        data_override = [f"data.data_dir={data_dir}"] if data_dir is not None else []
        config = resolve_config(profile, config_file, [*(overrides or []), *data_override])
        match = DATASET_SPEC.match(dataset)
        if not match:
            raise InputError(dataset, "--dataset", "expected task/dataset, e.g. atsa/rest14 or acsa/rest16")
        check_student_dir(model)
        check_output_dir(out)  # before any model loads: a file or an unwritable place fails now, not at epoch 1
        if seed is None and not config.finetune.seeds:
            raise InputError(None, "--seed", "finetune.seeds is empty: give a seed")
        chosen_seed = config.finetune.seeds[0] if seed is None else seed
        # The key the flow's finetune stage computes for the same model, dataset and seed (tasks/stages/keys.py),
        # so a rerun into the same --out returns the result or resumes.
        settings = stage.FinetuneSettings.of(config)
        key = stage_key("finetune", stage.__name__, settings, model={"digest": sha256_tree(model)}, dataset=dataset,
                        seed=chosen_seed)
        result = stage.finetune(model, match.group(1), match.group(2), chosen_seed, settings, out, key=key)
    summary = {key: result.get(key) for key in SUMMARY_KEYS}

    def line(s: dict) -> str:
        scores = "  ".join(f"{view} F1 {100 * score['f1']:.2f}" for view, score in s["scores"].items())
        return (f"{dataset} seed {s['seed']}: best dev F1 {100 * s['best_dev_f1']:.2f} (epoch {s['best_epoch']}); "
                f"test {scores}; model at {s['model_dir']}")

    print_rank_zero_summary(summary, as_json, line)
