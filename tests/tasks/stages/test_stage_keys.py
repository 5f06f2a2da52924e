"""Stage cache keys: a stage's body receives its typed settings and nothing else of the config, and its key is
made of exactly those settings, its upstream digests and its code (its module's import closure).

Checked with real Prefect tasks on tiny inputs (t5-tiny student, tiny random Llama teacher, a slice of the
benchmark), for every stage of the `distill` and `study` flows:
- each stage runs on its settings alone (a body that reads a setting its type lacks fails with AttributeError),
  and the key it ran under is the one `stage_key` computes for the CLI and the rank launcher;
- no stage body or task takes the whole config;
- a run with `evaluate.views=[normal]` and then one with the default views re-runs fine-tuning and reports
  every view, and a stage served from the cache returns the same typed result as a fresh run;
- changing a helper a stage imports (or a data file its code loads by path) changes that stage's key and no
  other; moving an import between function and module level, in any stage module, changes none.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from fsa_distill.core.config import DistillConfig, resolve_config
from fsa_distill.tasks.stages import (
    corpus,
    finetune,
    generate,
    import_answers,
    pretrain,
    span_corruption,
    student,
    teacher_baseline,
    zeroshot,
)
from fsa_distill.tasks.stages.keys import Placement, stage_key
from fsa_distill.tasks.stages.records import ModelResult, Reviews
from fsa_distill.tasks.stages.stage_task import NOT_INPUTS, result_storage
from tests.teacher_fixtures import make_reviews

ROOT = Path(__file__).resolve().parents[3]
STAGES_DIR = ROOT / "tasks" / "stages"
# The stage modules: every one but the un-keyed review collection (its output's digest keys what follows), the
# shared task machinery, the key itself, the shared records, the rank launcher and the answer checks.
NOT_STAGE_MODULES = {"__init__", "collect", "keys", "stage_task", "records", "launch", "validation"}
STAGE_MODULES = sorted(path.stem for path in STAGES_DIR.glob("*.py") if path.stem not in NOT_STAGE_MODULES)
IMPORTED_TEACHER = "mixtral-8x7b-instruct-v0.1"
ANSWERS = [{"ID": 1, "Text": "The pizza was wonderful but the waiter ignored us.",
            "mixtral_response": 'Opinion Target 1: "pizza"\nAspect: "taste"\nSentiment: positive\n'
                                'Reasoning: The reviewer calls it wonderful.'}]


def tiny_config(work_dir: Path, benchmark_dir: Path, teacher_dir: Path, *overrides: str) -> DistillConfig:
    return resolve_config(
        "demo",
        overrides=[
            f"work_dir={work_dir}",
            f"data.data_dir={benchmark_dir}",
            "data.datasets=[atsa/rest14]",
            "data.max_train_sentences=16",
            "data.max_dev_sentences=6",
            "data.max_test_sentences=6",
            f"teacher.model={teacher_dir}",
            "teacher.backend=hf",
            "generation.max_new_tokens=8",
            "student.model=t5-tiny",
            "student.vocab_size=400",
            "pretrain.max_steps=2",
            "pretrain.batch_size=4",
            "pretrain.max_target_length=64",
            "pretrain.checkpoint_every=2",
            "pretrain.eval_every=2",
            "finetune.epochs=1",
            "finetune.batch_size=8",
            "finetune.max_new_tokens=8",
            "evaluate.teacher_max_sentences=2",
            *overrides,
        ],
        environ={},
    )


def run_task(task: Any, config: DistillConfig, **parameters: Any) -> Any:
    """One stage task through Prefect, with the run's placement, its results stored in the work dir as in a flow
    run; returns its state."""
    storage = result_storage(config.work_dir)
    return task.with_options(result_storage=storage)(placement=Placement.of(config), **parameters, return_state=True)


@pytest.fixture(scope="module")
def reviews_file(tmp_path_factory: pytest.TempPathFactory) -> Reviews:
    from fsa_distill.core.digests import sha256_file

    path = tmp_path_factory.mktemp("reviews") / "reviews.jsonl"
    path.write_text("".join(json.dumps(review) + "\n" for review in make_reviews(2)), encoding="utf-8")
    return Reviews(path=path, digest=sha256_file(path), n_reviews=2)


def upstream(result_type: type[BaseModel], **fields: Any) -> Any:
    """An upstream stage's result made from a fixture folder: only the fields the next stage reads (the rest are
    the upstream stage's own statistics), hence constructed without validation."""
    return result_type.model_construct(key="fixture", **fields)


def imported_settings(config: DistillConfig, folder: Path) -> import_answers.ImportSettings:
    answers = folder / "answers.jsonl"
    answers.write_text("".join(json.dumps(record) + "\n" for record in ANSWERS), encoding="utf-8")
    imported = config.model_validate({**config.model_dump(), "study": {
        "imported_answers": str(answers), "imported_teacher_id": IMPORTED_TEACHER}})
    return import_answers.ImportSettings.of(imported)


# stage → (its task, its settings for a config, its upstream inputs from the fixtures)
STAGES: dict[str, tuple[Any, Callable[[DistillConfig, Path], Any], Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "generate": (generate.generate_stage, lambda c, _: generate.GenerateSettings.of(c),
                 lambda fx: {"reviews": fx["reviews"]}),
    "corpus": (corpus.corpus_stage, lambda c, _: corpus.CorpusSettings.of(c),
               lambda fx: {"generations": [upstream(generate.TeacherAnswersResult, dataset_dir=fx["generation"],
                                                    digest="g"),
                                           upstream(span_corruption.DenoisingResult, dataset_dir=fx["generation"],
                                                    digest="d")]}),
    "student": (student.student_stage, lambda c, _: student.StudentSettings.of(c),
                lambda fx: {"corpus": upstream(corpus.CorpusResult, dataset_dir=fx["corpus"], digest="c")}),
    "study-student": (student.shared_student_stage, lambda c, _: student.StudentSettings.of(c),
                      lambda fx: {"texts": fx["reviews"]}),
    "pretrain": (pretrain.pretrain_stage, lambda c, _: pretrain.PretrainSettings.of(c),
                 lambda fx: {"student": fx["student"],
                             "corpus": upstream(corpus.CorpusResult, dataset_dir=fx["corpus"], digest="c")}),
    "finetune": (finetune.finetune_stage, lambda c, _: finetune.FinetuneSettings.of(c),
                 lambda fx: {"model": fx["student"], "dataset": "atsa/rest14", "seed": 42}),
    "zero-shot": (zeroshot.zeroshot_stage, lambda c, _: zeroshot.ZeroShotSettings.of(c),
                  lambda fx: {"model": fx["student"], "dataset": "atsa/rest14"}),
    "teacher-baseline": (teacher_baseline.teacher_baseline_stage,
                         lambda c, _: teacher_baseline.TeacherBaselineSettings.of(c), lambda fx: {}),
    "import-answers": (import_answers.import_stage, imported_settings, lambda fx: {}),
    "denoising-data": (span_corruption.denoising_stage, lambda c, _: span_corruption.DenoisingSettings.of(c),
                       lambda fx: {"reviews": fx["reviews"]}),
}


def test_every_stage_module_is_covered() -> None:
    """A new stage module must join STAGES (and so this file's checks)."""
    tasks = {task.fn.__module__.rsplit(".", 1)[1] for task, _, _ in STAGES.values()}
    assert tasks == set(STAGE_MODULES)


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_runs_on_its_settings_alone_under_the_shared_key(
    stage: str,
    tmp_path: Path,
    benchmark_dir: Path,
    tiny_llama_dir: Path,
    tiny_student_dir: Path,
    tiny_generation_dir: Path,
    tiny_corpus_dir: Path,
    reviews_file: Reviews,
) -> None:
    task, settings_of, inputs_of = STAGES[stage]
    config = tiny_config(tmp_path / "work", benchmark_dir, tiny_llama_dir)
    fixtures = {"reviews": reviews_file, "generation": tiny_generation_dir, "corpus": tiny_corpus_dir,
                "student": ModelResult(model_dir=tiny_student_dir, digest="s", key="fixture")}
    settings, inputs = settings_of(config, tmp_path), inputs_of(fixtures)
    state = run_task(task, config, settings=settings, **inputs)
    assert state.is_completed(), state  # a body reading a setting its type lacks fails here (AttributeError)
    assert state.result().key == stage_key(stage, task.fn.__module__, settings, **inputs)


def _annotations(function: ast.FunctionDef) -> list[str]:
    arguments = function.args
    return [ast.unparse(a.annotation) for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            if a.annotation is not None]


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_no_stage_function_takes_the_whole_config(module: str) -> None:
    """Only a settings type's `of` sees the whole config: bodies and tasks get their settings (and a task its
    placement, which is never keyed and never handed to a body whole)."""
    tree = ast.parse((STAGES_DIR / f"{module}.py").read_text(encoding="utf-8"))
    taking_config = [node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name != "of"
                     and any("DistillConfig" in annotation for annotation in _annotations(node))]
    assert taking_config == []


def test_the_placement_never_enters_a_key() -> None:
    assert {"settings", "placement", "tracking_run_id"} == NOT_INPUTS


def test_changing_the_views_reruns_finetuning_and_reports_every_view(
    tmp_path: Path, benchmark_dir: Path, tiny_llama_dir: Path, tiny_student_dir: Path
) -> None:
    model = ModelResult(model_dir=tiny_student_dir, digest="s", key="fixture")
    only_normal = tiny_config(tmp_path / "work", benchmark_dir, tiny_llama_dir, "evaluate.views=[normal]")
    every_view = tiny_config(tmp_path / "work", benchmark_dir, tiny_llama_dir)

    def run(config: DistillConfig) -> Any:
        return run_task(finetune.finetune_stage, config, settings=finetune.FinetuneSettings.of(config), model=model,
                        dataset="atsa/rest14", seed=42)

    first = run(only_normal)
    assert first.name == "Completed" and set(first.result().scores) == {"normal"}
    second = run(every_view)
    assert second.name == "Completed", "fine-tuning was served from the cache of the normal-only run"
    assert set(second.result().scores) == {"normal", "implicit", "multi"}
    again = run(every_view)
    assert again.name == "Cached"
    assert isinstance(again.result(), finetune.FinetuneResult), "the cached result did not come back typed"
    assert again.result() == second.result()


# --------------------------------------------------------------------------- code part of the key


def installed_copy(tmp_path: Path) -> Path:
    """A copy of the package laid out as installed (fsa_distill/ with flows, tasks, models, benchmark inside),
    which the test may edit; a subprocess with it first on PYTHONPATH imports it instead of the checkout."""
    view = tmp_path / "view"
    shutil.copytree(ROOT / "fsa_distill", view / "fsa_distill", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("flows", "tasks", "models", "benchmark"):
        shutil.copytree(ROOT / name, view / "fsa_distill" / name, ignore=shutil.ignore_patterns("__pycache__"))
    return view


CODE_DIGESTS = f"""
import json, sys
from fsa_distill.tasks.stages.keys import code_digest
for _ in sys.stdin:
    print(json.dumps({{m: code_digest("fsa_distill.tasks.stages." + m) for m in {STAGE_MODULES!r}}}), flush=True)
"""


@contextmanager
def code_digests_of(view: Path) -> Iterator[Callable[[], dict[str, str]]]:
    """A process importing the copy, asked for every stage module's code digest whenever the test wants (the
    digests read the files afresh on every call)."""
    env = {**os.environ, "PYTHONPATH": str(view)}
    process = subprocess.Popen([sys.executable, "-c", CODE_DIGESTS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True, env=env, cwd=view)

    def digests() -> dict[str, str]:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write("digests\n")
        process.stdin.flush()
        line = process.stdout.readline()
        assert line, "the digest process died (see its stderr above)"
        return json.loads(line)

    try:
        yield digests
    finally:
        process.kill()
        process.wait(timeout=30)


def test_changing_an_imported_helper_reruns_exactly_the_stages_that_run_it(tmp_path: Path) -> None:
    view = installed_copy(tmp_path)
    with code_digests_of(view) as code_digests:
        before = code_digests()
        assert before == code_digests()

        # `collate` lives in the student toolbox (models/student/batching.py); pretraining and fine-tuning use it.
        batching = view / "fsa_distill" / "models" / "student" / "batching.py"
        batching.write_text(batching.read_text().replace(
            "real_tokens = sum(len(src) + len(tgt) for src, tgt in examples)",
            "real_tokens = sum(len(tgt) + len(src) for src, tgt in examples)"))
        after_helper = code_digests()
        assert {name for name in before if before[name] != after_helper[name]} == {"pretrain", "finetune"}

        # The metric script is loaded by path, not imported: the scorer names its folder, and that is enough.
        metric = view / "fsa_distill" / "benchmark" / "fsa_f1" / "fsa_f1.py"
        metric.write_text(metric.read_text() + "\n# changed\n")
        after_metric = code_digests()
        changed = {name for name in before if after_helper[name] != after_metric[name]}
        # zero-shot ranks label likelihoods and never scores extractions: only the stages that run the scorer.
        assert changed == {"finetune", "teacher_baseline"}


def _move_an_import(source: str) -> str:
    """The module with one `fsa_distill` import moved: the first one inside a function up to module level, or,
    where no function imports anything, the last module-level one down into the first function (after its
    docstring). Line-based, so the rest of the file stays byte for byte."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    top = [n for n in tree.body if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("fsa_distill")]
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    inner = [n for f in functions for n in ast.walk(f)
             if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("fsa_distill")]
    if inner:
        node, target = inner[0], top[-1].end_lineno  # after the last module-level import
        text = "".join(line[node.col_offset:] for line in lines[node.lineno - 1:node.end_lineno])
    else:
        node, function = top[-1], functions[0]
        first = function.body[1] if ast.get_docstring(function) else function.body[0]
        target = first.lineno - 1
        indent = " " * first.col_offset
        text = "".join(indent + line for line in lines[node.lineno - 1:node.end_lineno])
    del lines[node.lineno - 1:node.end_lineno]
    if target >= node.end_lineno:
        target -= node.end_lineno - node.lineno + 1
    lines.insert(target, text)
    return "".join(lines)


def test_moving_an_import_in_any_stage_module_changes_no_key(tmp_path: Path) -> None:
    view = installed_copy(tmp_path)
    with code_digests_of(view) as code_digests:
        before = code_digests()
        for module in STAGE_MODULES:
            path = view / "fsa_distill" / "tasks" / "stages" / f"{module}.py"
            moved = _move_an_import(path.read_text(encoding="utf-8"))
            assert moved != path.read_text(encoding="utf-8")
            ast.parse(moved)  # still Python
            path.write_text(moved, encoding="utf-8")
        assert code_digests() == before
