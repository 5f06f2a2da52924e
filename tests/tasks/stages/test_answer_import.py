"""Bring your own teacher answers: `cache import` puts real-format answers into the answer store under a teacher
id, validated like generated ones, and a generate run with that teacher finds them all and generates nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsa_distill.cli.app import app
from fsa_distill.core.config import resolve_config
from fsa_distill.models.teacher.base import TeacherError
from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses
from fsa_distill.tasks.stages.import_answers import import_answers
from fsa_distill.tasks.store.answer_files import read_answer_file
from fsa_distill.tasks.store.answers import store_location

TEACHER = "mixtral-8x7b-instruct-v0.1"
# The shape of ../shared/teacher_outputs/mixtral_500.jsonl (ID, Text, Overall, mixtral_response).
RECORDS = [
    {"ID": 101, "Text": "The pizza was wonderful but the waiter ignored us for twenty minutes.", "Overall": 3.0,
     "mixtral_response": ' Opinion Target 1: "pizza"\nAspect: "taste"\nSentiment: strongly positive\n'
                         'Reasoning: The reviewer calls it wonderful.\n\nOpinion Target 2: "waiter"\n'
                         'Aspect: "attentiveness"\nSentiment: negative\nReasoning: We were ignored.'},
    {"ID": 102, "Text": "Cozy little place, friendly staff and decent coffee.", "Overall": 4.0,
     "mixtral_response": " I found this little place cozy and I enjoyed it. The staff were friendly to me, which "
                         "I appreciated, and the coffee was decent, which satisfied me."},
    {"ID": 103, "Text": "Loved the tacos here, will come back.", "Overall": 5.0,  # invents a target: rejected
     "mixtral_response": 'Opinion Target 1: "burritos"\nAspect: "taste"\nSentiment: positive\nReasoning: loved.'},
]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("\ufeff" + "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")  # BOM, as shared
    return path


def _config(work_dir: Path, prompts: list[str]):
    return resolve_config("demo", overrides=[f"work_dir={work_dir}", "teacher.backend=imported",
                                             f"teacher.model={TEACHER}", f"generation.prompts={prompts}"], environ={})


def test_prompt_is_inferred_from_the_answer_shape(tmp_path: Path) -> None:
    records = read_answer_file(_write(tmp_path / "answers.jsonl", RECORDS))
    assert [r.prompt for r in records] == ["analysis", "rewrite", "analysis"]
    assert [r.prompt for r in read_answer_file(tmp_path / "answers.jsonl", "rewrite")] == ["rewrite"] * 3


def test_imported_answers_are_validated_and_a_run_with_that_teacher_generates_nothing(tmp_path: Path) -> None:
    answers = _write(tmp_path / "answers.jsonl", RECORDS)
    result = CliRunner().invoke(app, ["cache", "import", str(answers), "--teacher-id", TEACHER,
                                      "--set", f"work_dir={tmp_path}", "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert (stats["accepted"], stats["rejected"]) == (2, 1)
    assert stats["rejected_by_reason"] == {"target_not_in_review": 1}

    # analysis: 2 imported, 1 accepted (the invented-target one is stored as rejected); rewrite: 1 accepted
    for prompt, indices, usable in (("analysis", [0, 2], 1), ("rewrite", [1], 1)):
        reviews = [{"id": str(RECORDS[i]["ID"]), "text": RECORDS[i]["Text"]} for i in indices]
        run = generate_responses(reviews, GenerateSettings.of(_config(tmp_path, [prompt])),
                                 tmp_path / f"out-{prompt}", progress=False, work_dir=tmp_path)
        assert run["generated"] == 0 and run["cached"] == len(indices) and run["teacher"] == TEACHER
        assert run["rows"] == usable and run["rejected"] == len(indices) - usable
    again = CliRunner().invoke(app, ["cache", "import", str(answers), "--teacher-id", TEACHER,
                                     "--set", f"work_dir={tmp_path}", "--json"])
    assert json.loads(again.stdout.strip().splitlines()[-1])["already_in_store"] == 3


def test_a_review_that_was_never_imported_is_an_error_not_a_gap(tmp_path: Path) -> None:
    config = _config(tmp_path, ["analysis"])
    import_answers(read_answer_file(_write(tmp_path / "answers.jsonl", RECORDS[:1])), GenerateSettings.of(config),
                   TEACHER, store_location(config.work_dir, config.generation.cache_url))
    with pytest.raises(TeacherError, match="not in the answer store"):
        generate_responses([{"id": "x", "text": "A review nobody imported."}], GenerateSettings.of(config),
                           tmp_path / "out",
                           progress=False, work_dir=config.work_dir)


def test_bad_answer_files_are_user_errors(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.jsonl", [{"ID": 1, "Text": "fine"}])
    result = CliRunner().invoke(app, ["cache", "import", str(bad), "--teacher-id", TEACHER,
                                      "--set", f"work_dir={tmp_path}"])
    assert result.exit_code == 2 and "line 1" in result.output
