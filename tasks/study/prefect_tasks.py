"""The Prefect tasks only the study needs, beside the distill flow's own (tasks/stages/prefect_tasks.py): the shared student,
the imported answers, arm B's denoising data and corpora built from several generation datasets.

Same contract as tasks/stages/prefect_tasks.py: each task's `StageSpec` declares the config it reads (its code is found from
its imports), outputs go to `<work_dir>/stages/<stage>/<key>`, results are small JSON dicts with a content digest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_file, sha256_json, sha256_tree
from fsa_distill.models.student.sentinels import N_SENTINELS
from fsa_distill.tasks.stages.keys import STAGE_TASK_OPTIONS, StageCachePolicy, StageSpec, current_stage_key
from fsa_distill.tasks.stages.prefect_tasks import HOUR, stage_dir
from fsa_distill.tasks.stages.records import CorpusResult, ModelResult, Reviews, StageResult

DENOISING_COPIES = 2  # differently corrupted versions per review: as many examples as arm C's two prompts


class ImportResult(StageResult):
    """What `cache import` stored for the study's imported teacher."""

    teacher: str
    records: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int]
    acceptance_rate: float


class DenoisingResult(StageResult):
    """Arm B's span-corruption pairs, in the generate stage's dataset layout."""

    dataset_dir: Path
    rows: int


def write_reviews(reviews: list[dict[str, str]], path: Path) -> Reviews:
    """A review file the generate stage reads, and its digest (the generate stage's upstream key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in reviews), encoding="utf-8")
    return Reviews(path=path, digest=sha256_file(path), n_reviews=len(reviews))


SHARED_STUDENT = StageSpec("study-student", reads=("student.model", "student.vocab_size"))


@task(name="study-student", cache_policy=StageCachePolicy(spec=SHARED_STUDENT), timeout_seconds=2 * HOUR,
      **STAGE_TASK_OPTIONS)
def shared_student_stage(texts: Reviews, config: DistillConfig) -> ModelResult:
    """The one untrained student of every arm: tokenizer trained on arm-neutral text (benchmark train sentences
    and review texts, never teacher answers), plus span-corruption sentinels."""
    from fsa_distill.models.student import build_student
    from fsa_distill.models.student.sentinels import add_sentinel_tokens

    key = current_stage_key()
    out_dir = stage_dir(config, SHARED_STUDENT.name, key)
    lines = [json.loads(line)["text"] for line in Path(texts.path).read_text(encoding="utf-8").splitlines()]
    plain = build_student(config.student.model, out_dir / "plain", lines, config.student.vocab_size)
    model_dir = add_sentinel_tokens(plain, out_dir / "model", N_SENTINELS)
    return ModelResult(model_dir=model_dir, digest=sha256_tree(model_dir), key=key)


def answers_digest(config: DistillConfig) -> str | None:
    """The imported file's bytes: new answers under the same path must be imported again."""
    path = config.study.imported_answers
    return sha256_file(path) if path is not None and Path(path).is_file() else None


IMPORT = StageSpec("import-answers", reads=("teacher", "generation", "study.imported_teacher_id"),
                   content=answers_digest)


@task(name="import-answers", cache_policy=StageCachePolicy(spec=IMPORT), timeout_seconds=1 * HOUR,
      **STAGE_TASK_OPTIONS)
def import_stage(answers_file: str, config: DistillConfig) -> ImportResult:
    """The imported teacher's answers into this work dir's answer store (idempotent)."""
    from fsa_distill.tasks.stages.import_answers import import_answers
    from fsa_distill.tasks.store.answer_files import read_answer_file

    stats = import_answers(read_answer_file(Path(answers_file)), config, config.study.imported_teacher_id)
    # What the file holds, not what this store lacked: stable across reruns, so it can key the later stages.
    kept = {k: v for k, v in stats.items() if k not in ("stored", "already_in_store", "cache_path")}
    kept["skipped_empty"] = kept.pop("refused")  # its name before issue #23: existing stage digests still hold
    return ImportResult(**kept, digest=sha256_json(kept), key=current_stage_key())


DENOISING = StageSpec("denoising-data", reads=("corpus.seed",))


@task(name="denoising-data", cache_policy=StageCachePolicy(spec=DENOISING), timeout_seconds=1 * HOUR,
      **STAGE_TASK_OPTIONS)
def denoising_stage(reviews: Reviews, config: DistillConfig) -> DenoisingResult:
    """Arm B's span-corruption pairs, saved in the generate stage's layout."""
    from fsa_distill.tasks.stages.span_corruption import write_denoising_dataset

    rows = [json.loads(line) for line in Path(reviews.path).read_text(encoding="utf-8").splitlines()]
    key = current_stage_key()
    out_dir = stage_dir(config, DENOISING.name, key) / "dataset"
    write_denoising_dataset(rows, out_dir, DENOISING_COPIES, config.corpus.seed, N_SENTINELS - 1)
    return DenoisingResult(dataset_dir=out_dir, digest=sha256_tree(out_dir), rows=len(rows) * DENOISING_COPIES,
                           key=key)


STUDY_CORPUS = StageSpec("study-corpus", reads=("corpus",))


@task(name="study-corpus", cache_policy=StageCachePolicy(spec=STUDY_CORPUS), timeout_seconds=2 * HOUR,
      **STAGE_TASK_OPTIONS)
def corpus_from_generations_stage(generations: list[Any], config: DistillConfig) -> CorpusResult:
    """One pretraining corpus from several generate-stage datasets (an arm asked with per-review prompts)."""
    from fsa_distill.tasks.stages.corpus import build_corpus

    key = current_stage_key()
    out_dir = stage_dir(config, STUDY_CORPUS.name, key)
    result = build_corpus([Path(g.dataset_dir) for g in generations], out_dir, config.corpus)
    return CorpusResult(**result, key=key)
