"""Student stage: the untrained student and its tokenizer, built (offline sizes, the pretrained MiniLM warm start)
or fetched (hub id, folder) by models/student/. The study's variant builds one student for every arm, its
tokenizer trained on arm-neutral text and extended with span-corruption sentinels."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import task

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_tree
from fsa_distill.models.student import build_student
from fsa_distill.models.student.sentinels import N_SENTINELS, add_sentinel_tokens
from fsa_distill.tasks.stages.corpus import CorpusResult
from fsa_distill.tasks.stages.keys import Placement, StageSettings
from fsa_distill.tasks.stages.records import ModelResult, Reviews
from fsa_distill.tasks.stages.stage_task import current_stage_key, stage_dir, stage_task_options


class StudentSettings(StageSettings):
    """Which student to build, and its tokenizer's size where the build trains one (not `student.engine`, which
    only says how the trained student is served)."""

    model: str
    vocab_size: int

    @classmethod
    def of(cls, config: DistillConfig) -> StudentSettings:
        return cls(model=config.student.model, vocab_size=config.student.vocab_size)


@task(**stage_task_options("student", timeout_hours=2))
def student_stage(corpus: CorpusResult, settings: StudentSettings, placement: Placement) -> ModelResult:
    """The untrained student; a trained tokenizer learns from the corpus's reviews and answers."""
    import datasets

    key = current_stage_key()
    out_dir = stage_dir(placement, "student", key)
    train = datasets.load_from_disk(str(corpus.dataset_dir))["train"]
    texts = (text for batch in train.iter(batch_size=1000)  # streamed from the memory map, never a list
             for pair in zip(batch["source"], batch["target"], strict=True) for text in pair)
    model_dir = build_student(settings.model, out_dir / "model", texts, settings.vocab_size)
    return ModelResult(model_dir=model_dir, digest=sha256_tree(model_dir), key=key)


@task(**stage_task_options("study-student", timeout_hours=2))
def shared_student_stage(texts: Reviews, settings: StudentSettings, placement: Placement) -> ModelResult:
    """The one untrained student of every study arm: tokenizer trained on arm-neutral text (benchmark train
    sentences and review texts, never teacher answers), plus span-corruption sentinels."""
    key = current_stage_key()
    out_dir = stage_dir(placement, "study-student", key)
    lines = [json.loads(line)["text"] for line in Path(texts.path).read_text(encoding="utf-8").splitlines()]
    plain = build_student(settings.model, out_dir / "plain", lines, settings.vocab_size)
    model_dir = add_sentinel_tokens(plain, out_dir / "model", N_SENTINELS)
    return ModelResult(model_dir=model_dir, digest=sha256_tree(model_dir), key=key)
