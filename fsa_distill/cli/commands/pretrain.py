"""`fsa-distill pretrain`: the pretraining stage alone, from a resolved config, with no Prefect server or flow and no
MLflow.

A plain function call between explicit folders, so the same command runs data-parallel under `torchrun` or
`accelerate launch` (tasks/stages/pretrain.py: rank 0 writes, the others train their part of each batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.cli.console import print_rank_zero_summary, user_errors
from fsa_distill.cli.options import ConfigFile, JsonSummary, Overrides, Profile

SUMMARY_KEYS = ("model_dir", "steps", "resumed_from_step", "final_train_loss", "final_eval_loss", "tokens_per_s",
                "padding_ratio", "n_train", "n_validation")


def pretrain(
    student: Annotated[Path, typer.Option(help="Student model folder (HF format), e.g. the student stage's.")],
    corpus: Annotated[Path, typer.Option(help="Corpus dataset folder (the corpus stage's train/validation).")],
    out: Annotated[Path, typer.Option(help="Output folder: checkpoints/, train_log.jsonl, model/.")],
    profile: Profile = "demo",
    config_file: ConfigFile = None,
    overrides: Overrides = None,
    as_json: JsonSummary = False,
) -> None:
    """Pretrain the student on teacher responses; rerunning resumes from the last checkpoint in --out."""
    with user_errors():
        from fsa_distill.core.config import resolve_config
        from fsa_distill.core.digests import sha256_tree
        from fsa_distill.core.paths import check_input_dir, check_output_dir
        from fsa_distill.models.student.load import check_student_dir
        from fsa_distill.tasks.stages import pretrain as stage
        from fsa_distill.tasks.stages.corpus import stored_corpus_digest
        from fsa_distill.tasks.stages.keys import stage_key

        config = resolve_config(profile, config_file, overrides or [])
        check_student_dir(student)
        check_input_dir(corpus, "corpus folder")
        check_output_dir(out)  # before any model loads: a file or an unwritable place fails now, not at step 1
        # The key the flow's pretrain stage computes for the same student and corpus (tasks/stages/keys.py), so
        # a rerun into the same --out returns the finished result or resumes.
        settings = stage.PretrainSettings.of(config)
        key = stage_key("pretrain", stage.__name__, settings, student={"digest": sha256_tree(student)},
                        corpus={"digest": stored_corpus_digest(corpus) or sha256_tree(corpus)})
        result = stage.pretrain(student, corpus, settings.pretrain, out, key=key)
    summary = {key: result.get(key) for key in SUMMARY_KEYS}
    print_rank_zero_summary(summary, as_json, lambda s: (
        f"pretrained {s['steps']} steps (resumed from {s['resumed_from_step']}): train loss {s['final_train_loss']}, "
        f"eval loss {s['final_eval_loss']}; model at {s['model_dir']}"))
