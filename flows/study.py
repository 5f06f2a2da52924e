"""The `study` flow (issue #13): does distillation help, and if not, why not?

Five arms share one student architecture, one tokenizer (trained on arm-neutral text) and one fine-tuning
recipe; every arm that pretrains gets the same number of steps:
- A: no pretraining;
- B: the same reviews with no teacher (T5 span-corruption denoising): "more in-domain text";
- C: the offline teacher (SmolLM2) analyses and rewrites every review (benchmark train sentences + imported
  reviews);
- D: the imported real answers (Mixtral) on their own reviews;
- D_prime: SmolLM2 on D's reviews with the prompt D got for each: the like-for-like test of teacher quality.

Wiring only: every step is a cached stage (tasks/stages/), so an interrupted study resumes where it stopped; the
statistics live in benchmark/stats.py and the results file in tasks/study/results.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from fsa_distill.core.config import DistillConfig, GenerationConfig, TeacherConfig
from fsa_distill.flows.config_parameter import flow_config
from fsa_distill.flows.stage_runner import StageRunner
from fsa_distill.tasks.stages.corpus import CorpusResult, CorpusSettings, corpus_stage
from fsa_distill.tasks.stages.finetune import FinetuneResult, FinetuneSettings, finetune_stage
from fsa_distill.tasks.stages.generate import GenerateSettings, TeacherAnswersResult, generate_stage
from fsa_distill.tasks.stages.import_answers import ImportSettings, import_stage
from fsa_distill.tasks.stages.pretrain import PretrainResult, PretrainSettings, pretrain_stage
from fsa_distill.tasks.stages.records import ModelResult, Reviews
from fsa_distill.tasks.stages.span_corruption import DenoisingSettings, denoising_stage
from fsa_distill.tasks.stages.student import StudentSettings, shared_student_stage
from fsa_distill.tasks.stages.zeroshot import ZeroShotResult, ZeroShotSettings, zeroshot_stage
from fsa_distill.tasks.store.answer_files import PROMPTS
from fsa_distill.tasks.study.results import assemble_results, report_inputs, study_metrics, write_results
from fsa_distill.tasks.study.reviews import benchmark_reviews, imported_records, study_reviews, write_reviews
from fsa_distill.tasks.tracking.runs import RunTracker

ARMS = ("A", "B", "D", "D_prime", "C")  # run order: C needs the most teacher answers


class StageClock:
    """Wall seconds of every stage that actually ran, kept across resumed runs (a cached stage keeps the time
    of the run that computed it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def run(self, run_stage: StageRunner, label: str, stage_task: Any, **parameters: Any) -> Any:
        started = time.perf_counter()
        result = run_stage(label, stage_task, **parameters)
        if run_stage.outcomes[label] == "ran" or label not in self.seconds:
            self.seconds[label] = round(time.perf_counter() - started, 1)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.seconds, indent=1))
        return result


def with_prompt(config: DistillConfig, prompt: str, teacher: TeacherConfig | None = None) -> GenerateSettings:
    """The settings of one (teacher, prompt) generation: the arm's teacher, asked only `prompt` (validated)."""
    generation = GenerationConfig.model_validate({**config.generation.model_dump(), "prompts": [prompt]})
    return GenerateSettings(teacher=teacher or config.teacher, generation=generation)


def imported_teacher(config: DistillConfig) -> TeacherConfig:
    return TeacherConfig(model=config.study.imported_teacher_id, backend="imported",
                         max_model_len=config.teacher.max_model_len)


def _evaluate_arm(run_stage: StageRunner, clock: StageClock, arm: str, model: Any, config: DistillConfig
                  ) -> tuple[list[FinetuneResult], dict[str, ZeroShotResult]]:
    """The arm's student fine-tuned on every dataset × seed, and its zero-shot polarity when the config asks."""
    finetuned: list[FinetuneResult] = []
    zero_shot: dict[str, ZeroShotResult] = {}
    settings = FinetuneSettings.of(config)
    for dataset in config.data.datasets:
        for seed in config.finetune.seeds:
            finetuned.append(clock.run(run_stage, f"{arm}/finetune/{dataset}/seed-{seed}", finetune_stage,
                                       live_metrics=True, model=model, dataset=dataset, seed=seed, settings=settings))
        if config.evaluate.zero_shot:
            zero_shot[dataset] = clock.run(run_stage, f"{arm}/zero-shot/{dataset}", zeroshot_stage,
                                           model=model, dataset=dataset, settings=ZeroShotSettings.of(config))
    return finetuned, zero_shot


def _study_report(results: dict[str, Any], run_stage: StageRunner, tracker: RunTracker, parent: str,
                  config: DistillConfig) -> Path:
    """The study's HTML report (tables and each arm's pretraining curves), logged on the parent run."""
    from fsa_distill.tasks.tracking.report import build_report, curves_from_mlflow

    curve_runs = {f"pretrain/{label.split('/')[0]}": run_id for label, run_id in run_stage.metric_runs.items()
                  if label.endswith("/pretrain")}
    curves = curves_from_mlflow(config.mlflow_uri, curve_runs, ["train/loss", "eval/loss"])
    report = build_report(report_inputs(results, curves), config.work_dir / "reports" / parent)
    tracker.log_artifact(parent, report.parent, "report")
    return report


def _shared_student(run_stage: StageRunner, clock: StageClock, records: list[Any], study_dir: Path,
                    config: DistillConfig) -> ModelResult:
    """One student and tokenizer for all arms, from arm-neutral text: the fine-tuning sentences and the review
    texts."""
    neutral = benchmark_reviews(config, per_dataset=config.data.max_train_sentences or 10**9)
    texts = write_reviews(neutral + [{"id": r.record_id, "text": r.review} for r in records],
                          study_dir / "tokenizer_texts.jsonl")
    return clock.run(run_stage, "student", shared_student_stage, texts=texts, settings=StudentSettings.of(config))


def _plain(finetuned: dict[str, list[Any]], zero_shot: dict[str, dict[str, Any]], generations: dict[str, list[Any]],
           corpora: dict[str, Any], pretrained: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The stage records as the plain JSON values the results file is assembled from, in assemble_results' order."""
    def plain(record: Any) -> dict[str, Any]:
        return record.model_dump(mode="json")

    return ({arm: [plain(r) for r in runs] for arm, runs in finetuned.items()},
            {arm: {d: plain(z) for d, z in by_dataset.items()} for arm, by_dataset in zero_shot.items()},
            {arm: [plain(g) for g in gens] for arm, gens in generations.items()},
            {arm: plain(c) for arm, c in corpora.items()}, {arm: plain(p) for arm, p in pretrained.items()})


def run_study(config: DistillConfig) -> dict[str, Any]:
    """Every arm, end to end; writes `study.results_path` and the run report; returns the results."""
    logger = get_run_logger()
    tracker = RunTracker(config)
    parent = tracker.start_parent(run_name="study", tags={"profile": config.profile, "flow": "study",
                                                          "config_digest": config.digest()})
    tracker.log_dict(parent, config.model_dump(mode="json"), "config/resolved_config.json")
    run_stage = StageRunner(config, tracker, parent)
    study_dir = config.work_dir / "study"
    clock = StageClock(study_dir / "stage_seconds.json")
    started = time.perf_counter()

    def generate(label: str, settings: GenerateSettings, reviews: Reviews) -> TeacherAnswersResult:
        return clock.run(run_stage, label, generate_stage, reviews=reviews, settings=settings)

    def corpus(label: str, generations: list[Any]) -> CorpusResult:
        return clock.run(run_stage, label, corpus_stage, generations=generations, settings=CorpusSettings.of(config))

    try:
        arms = [arm for arm in ARMS if arm in config.study.arms]
        reviews = write_reviews(study_reviews(config), study_dir / "reviews.jsonl")
        records = imported_records(config)
        logger.info("study: %d reviews (%d imported answers), arms %s", reviews.n_reviews, len(records), arms)
        by_prompt = {prompt: write_reviews(
            [{"id": f"imported:{r.record_id}", "text": r.review} for r in records if r.prompt == prompt],
            study_dir / f"imported_{prompt}.jsonl") for prompt in PROMPTS}

        def arm_generations(arm: str) -> list[Any]:
            """The arm's pretraining data, in the generate stage's layout (B: denoising pairs, no teacher)."""
            if arm == "B":
                return [clock.run(run_stage, "B/denoising-data", denoising_stage, reviews=reviews,
                                  settings=DenoisingSettings.of(config))]
            if arm == "C":
                return [generate("C/generate", GenerateSettings.of(config), reviews)]
            prompts = [p for p in PROMPTS if by_prompt[p].n_reviews]
            if arm == "D_prime":
                return [generate(f"D_prime/generate-{p}", with_prompt(config, p), by_prompt[p]) for p in prompts]
            clock.run(run_stage, "D/import", import_stage, settings=ImportSettings.of(config))
            teacher = imported_teacher(config)
            return [generate(f"D/generate-{p}", with_prompt(config, p, teacher), by_prompt[p]) for p in prompts]

        student = _shared_student(run_stage, clock, records, study_dir, config)

        # Arm by arm, those needing no SmolLM2 answers first: a teacher still filling the answer store in the
        # background (or a resumed study) finds them cached by the time C and D' need them.
        generations: dict[str, list[Any]] = {}
        corpora: dict[str, CorpusResult] = {}
        finetuned: dict[str, list[FinetuneResult]] = {}
        zero_shot: dict[str, dict[str, ZeroShotResult]] = {}
        pretrained: dict[str, PretrainResult] = {}
        for arm in arms:
            model = student
            if arm != "A":
                generations[arm] = arm_generations(arm)
                corpora[arm] = corpus(f"{arm}/corpus", generations[arm])
                model = pretrained[arm] = clock.run(run_stage, f"{arm}/pretrain", pretrain_stage,
                                                    live_metrics=True, student=student, corpus=corpora[arm],
                                                    settings=PretrainSettings.of(config))
            finetuned[arm], arm_zero_shot = _evaluate_arm(run_stage, clock, arm, model, config)
            if arm_zero_shot:
                zero_shot[arm] = arm_zero_shot
            logger.info("study: arm %s done", arm)

        results = assemble_results(config, *_plain(finetuned, zero_shot, generations, corpora, pretrained),
                                   clock.seconds)
        results["mlflow_run_id"] = parent
        results["flow_seconds_this_run"] = round(time.perf_counter() - started, 1)
        results["stages_this_run"] = dict(run_stage.outcomes)  # "ran" or "cached": what a resumed study redid
        path = write_results(results, config.study.results_path)
        results["results_path"] = str(path)
        tracker.log_artifact(parent, path, "results")
        tracker.log_metrics(parent, study_metrics(results))
        results["report_path"] = str(_study_report(results, run_stage, tracker, parent, config))
        tracker.finish(parent)
        return results
    except BaseException:
        tracker.finish(parent, "FAILED")
        raise


@flow(name="study")
def study(config_file: str | None = None, overrides: list[str] | None = None,
          config: DistillConfig | None = None) -> dict[str, Any]:
    """The controlled distillation study. The CLI resolves the config and passes it as `config`; deployments pass
    a config file and `key=value` overrides over the `study` profile, resolved here once."""
    return run_study(flow_config(config, "study", config_file, overrides))
