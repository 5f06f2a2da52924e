"""`fsa-distill bench quality`: the pretrained student fine-tuned on the full train split of each dataset.

The one full-data quality figure of the offline student, rerunnable by anyone: one seed (the study gives the
seed-to-seed spread), the demo profile's fine-tuning recipe unless overridden, the whole train / dev / test splits.
Each dataset's dev curve (the numbers the recipe is chosen on) and its test F1 per view are written to
docs/results/quality.json, with the recipe, the wall time of each run and the machine's load; a run of
one dataset replaces that dataset's entry and keeps the others.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fsa_distill.perf import RESULTS_DIR, machine

RESULTS_PATH = RESULTS_DIR / "quality.json"


def quality_config(data_dir: Path | None, work_dir: Path, overrides: list[str]):
    """The demo profile on the full splits, with the caller's overrides (e.g. finetune.epochs=6)."""
    from fsa_distill.core.config import resolve_config

    full = ["data.max_train_sentences=null", "data.max_dev_sentences=null", "data.max_test_sentences=null",
            "finetune.seeds=[42]", f"work_dir={work_dir}"]
    if data_dir is not None:
        full.append(f"data.data_dir={data_dir}")
    return resolve_config("demo", overrides=full + list(overrides))


def run_quality_bench(datasets: list[str], overrides: list[str], work_dir: Path, data_dir: Path | None,
                      results_path: Path | None = RESULTS_PATH) -> dict[str, Any]:
    """Fine-tune the configured student on each dataset's full train split; dev curve and test views each."""
    from fsa_distill.core.files import atomic_file
    from fsa_distill.models.student import build_student, student_origin
    from fsa_distill.tasks.stages.finetune import FinetuneSettings, finetune

    config = quality_config(data_dir, work_dir, overrides)
    student_dir = work_dir / "quality" / "student" / config.student.model
    if not student_dir.exists():
        build_student(config.student.model, student_dir, [], config.student.vocab_size)
    runs: dict[str, Any] = {}
    for name in datasets:
        task, dataset = name.split("/")
        started = time.perf_counter()
        result = finetune(student_dir, task, dataset, 42, FinetuneSettings.of(config),
                          work_dir / "quality" / name.replace("/", "-"),
                          key=config.digest("finetune", "data", "student") + name)
        runs[name] = {
            "test_f1_x100": {view: round(100 * scores["f1"], 2) for view, scores in result["scores"].items()},
            "test_scores": result["scores"], "best_epoch": result["best_epoch"],
            "best_dev_f1_x100": round(100 * result["best_dev_f1"], 2), "dev_curve": result["dev_history"],
            "breakdown": normal_view_breakdown(task, dataset, config.data, Path(result["predictions_path"])),
            "variety": result["variety"], "n_train": result["n_train"], "n_dev": result["n_dev"],
            "n_test": result["n_test"], "wall_s": round(time.perf_counter() - started, 1),
            "student": student_origin(config.student.model), "recipe": config.finetune.model_dump(mode="json"),
            "machine": machine(),
        }
    output = {"seed": 42, "runs": {**_earlier_runs(results_path), **runs}}
    if results_path is not None:
        Path(results_path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(Path(results_path)) as handle:
            json.dump(output, handle, indent=2)
    return output


def normal_view_breakdown(task: str, dataset: str, data: Any, predictions_path: Path) -> dict[str, Any]:
    """Where the normal view's F1 is lost: test.json and hard_test.json apart (the SemEval sentences against the
    paper's hard ones; null for a part the run did not score), and the aspects found with polarity ignored.
    F1, P and R x 100."""
    from fsa_distill.benchmark.data import load_sentences, load_task_data
    from fsa_distill.benchmark.scorer import read_prediction_file, score_aspects_only, score_predictions

    test, predictions = load_task_data(task, dataset, data)["test"], read_prediction_file(predictions_path)
    # the test split is test.json, then hard_test.json (a run may score only its first sentences)
    n_plain = len(load_sentences(task, dataset, "test", data.data_dir)) - len(
        load_sentences(task, dataset, "hard_test", data.data_dir))

    def x100(scores: dict[str, Any]) -> dict[str, float]:
        return {name: round(100 * scores[name], 2) for name in ("f1", "precision", "recall")}

    def part(first: int, last: int | None) -> dict[str, float] | None:
        return x100(score_predictions(task, test[first:last], predictions[first:last])) if test[first:last] else None

    return {"test_json": part(0, n_plain), "hard_test_json": part(n_plain, None),
            "aspects_only": x100(score_aspects_only(task, test, predictions))}


def _earlier_runs(results_path: Path | None) -> dict[str, Any]:
    """The other datasets' runs already in the results file (each carries its own recipe), so one dataset can be
    rerun alone; a file from before runs carried their recipe is not merged."""
    if results_path is None or not Path(results_path).is_file():
        return {}
    runs = json.loads(Path(results_path).read_text(encoding="utf-8")).get("runs", {})
    return {name: run for name, run in runs.items() if "recipe" in run}
