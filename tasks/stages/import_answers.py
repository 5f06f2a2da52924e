"""Put teacher answers produced elsewhere into the answer store, under a declared teacher id.

Each answer gets exactly the cache key a run with `teacher.backend: imported` and `teacher.model: <teacher id>`
computes for the same review and prompt (the keys are built by the generate stage's own `build_jobs`), and is
checked by the same validation as a generated answer: accepted answers feed the corpus, rejected ones are
stored with their reason and never used. Importing twice changes nothing (the store keeps the first answer).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from prefect import task
from pydantic import Field

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_file, sha256_json, sha256_text
from fsa_distill.core.errors import InputError
from fsa_distill.models.teacher.base import TeacherAnswer
from fsa_distill.models.teacher.imported import ImportedTeacher
from fsa_distill.models.teacher.prompts import PROMPT_DIR, load_prompt
from fsa_distill.tasks.stages.generate import GenerateSettings, build_jobs, clean_reviews, input_budget
from fsa_distill.tasks.stages.keys import Placement
from fsa_distill.tasks.stages.records import StageResult
from fsa_distill.tasks.stages.stage_task import current_stage_key, stage_task_options
from fsa_distill.tasks.stages.validation import validate_response
from fsa_distill.tasks.store.answer_files import AnswerRecord, read_answer_file
from fsa_distill.tasks.store.answers import StoredAnswer, open_store, store_location


class ImportSettings(GenerateSettings):
    """What the study's import reads: the generate settings its keys are computed with, the teacher id the
    answers go under, and the answers file (by its bytes: new answers under the same path import again)."""

    teacher_id: str
    answers_file: Path

    @classmethod
    def of(cls, config: DistillConfig) -> ImportSettings:
        if config.study.imported_answers is None:
            raise ValueError("study.imported_answers is not set: there is nothing to import")
        return cls(teacher=config.teacher, generation=config.generation, teacher_id=config.study.imported_teacher_id,
                   answers_file=config.study.imported_answers)

    def content(self) -> dict[str, Any]:
        answers = sha256_file(self.answers_file) if self.answers_file.is_file() else None
        return {"prompts": super().content(), "answers": answers}


class ImportResult(StageResult):
    """What `cache import` stored for the study's imported teacher."""

    teacher: str
    records: int
    by_prompt: dict[str, int] = Field(default_factory=dict)
    accepted: int
    rejected: int
    skipped_empty: int = 0
    rejected_by_reason: dict[str, int]
    acceptance_rate: float


def import_answers(records: list[AnswerRecord], settings: GenerateSettings, teacher_id: str, cache_path: str | Path
                   ) -> dict[str, Any]:
    """Validate every record, then store them all under `teacher_id` in one transaction in the answer store at
    `cache_path`; returns counts: the verdicts (accepted, rejected by reason) of the distinct answers, and what
    was stored, already there (in the store or earlier in the file) or refused (an empty review)."""
    if not teacher_id.strip():
        raise InputError(None, None, "--teacher-id must not be empty")
    teacher = ImportedTeacher(teacher_id, settings.teacher.max_model_len)
    gen = settings.generation
    prompt_dir = gen.prompt_dir or PROMPT_DIR
    # The input budget (review truncation) is the one a run with the configured prompts computes.
    budget = input_budget(settings, teacher, [load_prompt(name, prompt_dir=prompt_dir) for name in gen.prompts])
    entries: dict[str, StoredAnswer] = {}  # by key: a repeated review+prompt is one answer (the first, as stored)
    reasons: Counter[str] = Counter()
    skipped = 0
    for prompt_name in sorted({record.prompt for record in records}):
        group = [record for record in records if record.prompt == prompt_name]
        kept, _ = clean_reviews([{"id": i, "text": r.review} for i, r in enumerate(group)], teacher, budget)
        skipped += len(group) - len(kept)
        prompt = load_prompt(prompt_name, prompt_dir=prompt_dir)
        jobs = build_jobs(kept, [prompt], settings, teacher)
        for job in jobs:
            if job.key in entries:
                continue
            response = group[int(job.review_id)].response.strip()
            result = TeacherAnswer(response, teacher.count_tokens(response), "stop")
            reason = validate_response(job.review, prompt_name, result)
            reasons[reason or "accepted"] += 1
            entries[job.key] = StoredAnswer(
                key=job.key, review_digest=sha256_text(job.review), prompt=prompt_name,
                prompt_version=prompt.version, teacher=teacher_id, attempt=0, seed=job.request.seed,
                response=response, n_tokens=result.n_tokens, finish_reason="stop", reason=reason, final=True,
            )
    with open_store(str(cache_path)) as cache:
        stored = cache.record(entries.values())
    accepted = reasons.pop("accepted", 0)
    return {
        "teacher": teacher_id,
        "records": len(records),
        "by_prompt": dict(Counter(record.prompt for record in records)),
        "accepted": accepted,
        "rejected": sum(reasons.values()),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "stored": stored,
        "already_in_store": len(records) - skipped - stored,
        "refused": skipped,
        "acceptance_rate": accepted / len(entries) if entries else 0.0,
        "cache_path": cache.location,
    }


@task(**stage_task_options("import-answers", timeout_hours=1))
def import_stage(settings: ImportSettings, placement: Placement) -> ImportResult:
    """The imported teacher's answers into this work dir's answer store (idempotent)."""
    stats = import_answers(read_answer_file(settings.answers_file), settings, settings.teacher_id,
                           store_location(placement.work_dir, settings.generation.cache_url))
    # What the file holds, not what this store lacked: stable across reruns, so it can key the later stages.
    kept = {k: v for k, v in stats.items() if k not in ("stored", "already_in_store", "cache_path")}
    kept["skipped_empty"] = kept.pop("refused")  # its name before issue #23
    return ImportResult(**kept, digest=sha256_json(kept), key=current_stage_key())
