"""Stage cache keys: every stage declares the config it reads, and its code is found from its imports.

Checked with real Prefect tasks on tiny inputs (t5-tiny student, tiny random Llama teacher, a slice of the
benchmark):
- every config key a stage reads is in its declared key (a config that records the reads);
- a run with `evaluate.views=[normal]` and then one with the default views re-runs fine-tuning and reports
  every view;
- changing a helper a stage imports (or a data file its code loads by path) changes that stage's key and no
  other;
- the key the task ran under is the key `stage_key` computes from its declaration;
- a stage served from the cache returns the same typed result as a fresh run (Prefect's JSON serializer).
"""

from __future__ import annotations

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

from fsa_distill.core.config import DistillConfig, Section, resolve_config
from fsa_distill.tasks.stages import prefect_tasks as stages
from fsa_distill.tasks.stages.keys import PLACEMENT, StageSpec, stage_key
from fsa_distill.tasks.stages.records import (
    CorpusResult,
    FinetuneResult,
    ModelResult,
    Reviews,
    TeacherAnswersResult,
)
from tests.teacher_fixtures import make_reviews

ROOT = Path(__file__).resolve().parents[3]
WHOLE_SECTION_READS = {"model_dump", "model_dump_json", "model_copy"}


class ConfigReads:
    """Records which keys of one config object are read: a field read gives `section.key`, and dumping or copying
    a whole section gives the section's name (everything in it was read)."""

    def __init__(self, config: DistillConfig) -> None:
        self.prefixes: dict[int, str] = {}  # id(section object) → its dotted path + "."
        self.read: set[str] = set()
        self._index(config, "")

    def _index(self, model: BaseModel, prefix: str) -> None:
        self.prefixes[id(model)] = prefix
        for name in type(model).model_fields:
            value = model.__dict__[name]
            if isinstance(value, BaseModel):
                self._index(value, f"{prefix}{name}.")

    @contextmanager
    def recording(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConfigReads]:
        """While active, attribute reads on any section of the config are recorded (patched on the base class,
        so objects the code passes on, such as `config.pretrain`, are recorded too)."""

        def getattribute(model: BaseModel, name: str) -> Any:
            value = object.__getattribute__(model, name)
            prefix = self.prefixes.get(id(model))
            if prefix is not None:
                if name in WHOLE_SECTION_READS:
                    self.read.add(prefix.rstrip(".") or "<the whole config>")
                elif name in type(model).model_fields and not isinstance(value, BaseModel):
                    self.read.add(prefix + name)
            return value

        with monkeypatch.context() as patch:
            patch.setattr(Section, "__getattribute__", getattribute)
            yield self

    def undeclared(self, spec: StageSpec) -> list[str]:
        """Reads that no declared section or key covers (placement keys such as work_dir are never keyed)."""
        allowed = (*spec.reads, *PLACEMENT)
        return sorted(path for path in self.read if not any(path == a or path.startswith(a + ".") for a in allowed))


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
    """One stage task through Prefect, its results stored in the work dir as in a flow run; returns its state."""
    return task.with_options(result_storage=stages.result_storage(config))(config=config, **parameters, return_state=True)


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


STAGE_INPUTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "generate": lambda fx: {"reviews": fx["reviews"]},
    "corpus": lambda fx: {"generation": upstream(TeacherAnswersResult, dataset_dir=fx["generation"], digest="g")},
    "student": lambda fx: {"corpus": upstream(CorpusResult, dataset_dir=fx["corpus"], digest="c")},
    "pretrain": lambda fx: {"student": fx["student"], "corpus": upstream(CorpusResult, dataset_dir=fx["corpus"],
                                                                         digest="c")},
    "finetune": lambda fx: {"model": fx["student"], "dataset": "atsa/rest14", "seed": 42},
    "zero-shot": lambda fx: {"model": fx["student"], "dataset": "atsa/rest14"},
    "teacher-baseline": lambda fx: {},
}
STAGE_TASKS = {
    "generate": (stages.generate_stage, stages.GENERATE),
    "corpus": (stages.corpus_stage, stages.CORPUS),
    "student": (stages.student_stage, stages.STUDENT),
    "pretrain": (stages.pretrain_stage, stages.PRETRAIN),
    "finetune": (stages.finetune_stage, stages.FINETUNE),
    "zero-shot": (stages.zeroshot_stage, stages.ZERO_SHOT),
    "teacher-baseline": (stages.teacher_baseline_stage, stages.TEACHER_BASELINE),
}


@pytest.mark.parametrize("stage", list(STAGE_TASKS))
def test_every_config_read_is_in_the_stage_key(
    stage: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    benchmark_dir: Path,
    tiny_llama_dir: Path,
    tiny_student_dir: Path,
    tiny_generation_dir: Path,
    tiny_corpus_dir: Path,
    reviews_file: dict[str, Any],
) -> None:
    task, spec = STAGE_TASKS[stage]
    config = tiny_config(tmp_path / "work", benchmark_dir, tiny_llama_dir)
    fixtures = {"reviews": reviews_file, "generation": tiny_generation_dir, "corpus": tiny_corpus_dir,
                "student": ModelResult(model_dir=tiny_student_dir, digest="s", key="fixture")}
    inputs = STAGE_INPUTS[stage](fixtures)
    reads = ConfigReads(config)
    with reads.recording(monkeypatch):
        state = run_task(task, config, **inputs)
    assert state.is_completed(), state
    assert reads.read, "nothing was recorded: the recording config is broken"
    assert reads.undeclared(spec) == [], f"{stage} reads config keys its StageSpec does not declare"
    assert state.result().key == stage_key(spec, task.fn, config, **inputs)


def test_changing_the_views_reruns_finetuning_and_reports_every_view(
    tmp_path: Path, benchmark_dir: Path, tiny_llama_dir: Path, tiny_student_dir: Path
) -> None:
    model = ModelResult(model_dir=tiny_student_dir, digest="s", key="fixture")
    only_normal = tiny_config(tmp_path / "work", benchmark_dir, tiny_llama_dir, "evaluate.views=[normal]")
    every_view = tiny_config(tmp_path / "work", benchmark_dir, tiny_llama_dir)

    first = run_task(stages.finetune_stage, only_normal, model=model, dataset="atsa/rest14", seed=42)
    assert first.name == "Completed" and set(first.result().scores) == {"normal"}
    second = run_task(stages.finetune_stage, every_view, model=model, dataset="atsa/rest14", seed=42)
    assert second.name == "Completed", "fine-tuning was served from the cache of the normal-only run"
    assert set(second.result().scores) == {"normal", "implicit", "multi"}
    again = run_task(stages.finetune_stage, every_view, model=model, dataset="atsa/rest14", seed=42)
    assert again.name == "Cached"
    assert isinstance(again.result(), FinetuneResult), "the cached result did not come back typed"
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


CODE_DIGESTS = """
import json, sys
from fsa_distill.tasks.stages import prefect_tasks as stages
from fsa_distill.tasks.stages.keys import code_digest
tasks = [stages.generate_stage, stages.corpus_stage, stages.student_stage, stages.pretrain_stage,
         stages.finetune_stage, stages.zeroshot_stage, stages.teacher_baseline_stage]
for _ in sys.stdin:
    print(json.dumps({task.name: code_digest(task.fn) for task in tasks}), flush=True)
"""


@contextmanager
def code_digests_of(view: Path) -> Iterator[Callable[[], dict[str, str]]]:
    """A process importing the copy, asked for every stage's code digest whenever the test wants (importing
    Prefect and torch once: the digests themselves read the files afresh on every call)."""
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
        assert changed == {"finetune", "teacher-baseline"}
