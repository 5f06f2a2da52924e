"""The study's results file (`docs/results/study.json`): F1 per arm × dataset × seed × view, mean ± std,
paired differences with bootstrap intervals, zero-shot scores, teacher quality, stage wall times, and the three
goals of issue #13 stated as met or missed. Every F1 here is × 100.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from fsa_distill.benchmark.stats import mean_std, paired_difference, sentence_tallies
from fsa_distill.core.config import DistillConfig
from fsa_distill.core.files import write_json_atomically
from fsa_distill.tasks.study.teacher_quality import gold_train_sentences, teacher_quality

ARM_LABELS = {
    "A": "A: no pretraining",
    "B": "B: span-corruption denoising, same reviews, no teacher",
    "C": "C: SmolLM2 analyses + rewrites of all reviews",
    "D": "D: real Mixtral answers on their own reviews",
    "D_prime": "D′: SmolLM2 on D's reviews with D's prompts",
}
TEACHER_ARMS = ("C", "D", "D_prime")  # the distilled arms: pretrained on a teacher's answers
GOAL_DISTILLATION_GAIN = 6.0  # the paper's +6.00 F1


def prediction_profile(predictions: list[str]) -> dict[str, Any]:
    """How varied a run's test outputs are: a student that writes the same few strings for every sentence has
    learned the label distribution, not the sentences (what its F1 then measures)."""
    counts = Counter(predictions)
    top, top_count = counts.most_common(1)[0] if counts else ("", 0)
    return {"distinct": len(counts), "top": top[:80], "top_share": top_count / max(1, len(predictions)),
            "empty_share": counts.get("", 0) / max(1, len(predictions))}


def _arm_tallies(config: DistillConfig, runs: list[dict[str, Any]]) -> dict[str, dict[int, Any]]:
    """Normal-view test tallies of every (dataset, seed) run of one arm, for the paired bootstrap; each run also
    gets its `prediction_profile`."""
    from fsa_distill.benchmark.data import load_task_data
    from fsa_distill.benchmark.scorer import read_prediction_file

    tests: dict[str, list[dict[str, Any]]] = {}
    tallies: dict[str, dict[int, Any]] = {}
    for run in runs:
        task, dataset = run["dataset"].split("/")
        if run["dataset"] not in tests:
            tests[run["dataset"]] = load_task_data(task, dataset, config.data)["test"]
        predictions = read_prediction_file(Path(run["predictions_path"]))
        run["prediction_profile"] = prediction_profile(predictions)
        tallies.setdefault(run["dataset"], {})[run["seed"]] = sentence_tallies(task, tests[run["dataset"]],
                                                                               predictions)
    return tallies


def _over_seeds(runs: list[dict[str, Any]], value: Any) -> dict[str, dict[str, Any]]:
    """`value(run)` of each run per dataset, by seed, with its mean ± std over the seeds."""
    table: dict[str, dict[str, Any]] = {}
    for run in runs:
        table.setdefault(run["dataset"], {"by_seed": {}})["by_seed"][str(run["seed"])] = value(run)
    for cell in table.values():
        cell.update(mean_std(list(cell["by_seed"].values())))
    return table


def _f1_table(runs: list[dict[str, Any]], views: list[str]) -> dict[str, dict[str, Any]]:
    by_view = {view: _over_seeds(runs, lambda run, view=view: 100 * run["scores"][view]["f1"]) for view in views}
    return {dataset: {view: by_view[view][dataset] for view in views} for dataset in by_view[views[0]]}


def _dev_table(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Best dev F1 of each run per dataset, over seeds: what a study setting is chosen on (test only reports)."""
    return _over_seeds(runs, lambda run: 100 * run["best_dev_f1"])


def _goal(name: str, value: float, ci95: list[float], met: bool, target: str, detail: str) -> dict[str, Any]:
    return {"goal": name, "target": target, "value": round(value, 2), "ci95": [round(x, 2) for x in ci95],
            "met": bool(met), "detail": detail}


def _arm_record(arm: str, runs: list[dict[str, Any]], views: list[str], zero_shot: dict[str, Any],
                corpus: dict[str, Any] | None, pretrained: dict[str, Any] | None) -> dict[str, Any]:
    """One arm's row of the results: its test F1 per dataset × view and best dev F1 over seeds, its pretraining
    data and losses, zero-shot scores and the profile of its predictions per dataset and seed."""
    f1 = _f1_table(runs, views)
    predictions: dict[str, dict[str, Any]] = {run["dataset"]: {} for run in runs}
    for run in runs:
        predictions[run["dataset"]][str(run["seed"])] = run["prediction_profile"]
    return {
        "label": ARM_LABELS[arm],
        "pretrain_steps": pretrained["steps"] if pretrained else 0,
        "corpus": {k: corpus[k] for k in ("n_train", "n_validation", "n_invalid", "n_duplicates")}
        if corpus else None,
        "pretrain_loss": {k: pretrained.get(k) for k in ("final_train_loss", "final_eval_loss")}
        if pretrained else None,
        "f1": f1,
        "dev_f1": _dev_table(runs),
        "f1_normal_mean": sum(f1[d]["normal"]["mean"] for d in f1) / len(f1),
        "f1_mean_by_view": {view: sum(f1[d][view]["mean"] for d in f1) / len(f1) for view in views},
        "zero_shot": {d: {"accuracy": z["accuracy"], "macro_f1": z["macro_f1"], "n_aspects": z["n_aspects"]}
                      for d, z in zero_shot.items()},
        "predictions": predictions,
    }


def _teacher_quality(config: DistillConfig, generations: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each teacher arm's answers scored on the gold-labelled sentences among its reviews."""
    gold = gold_train_sentences(config)
    quality = {arm: teacher_quality([Path(g["dataset_dir"]) for g in gens], gold)
               for arm, gens in generations.items() if arm in TEACHER_ARMS}
    for arm, gens in generations.items():
        if arm in quality:
            quality[arm]["teacher"] = gens[0].get("teacher")
    return quality


def assemble_results(config: DistillConfig, finetuned: dict[str, list[dict[str, Any]]],
                     zero_shot: dict[str, dict[str, Any]], generations: dict[str, list[dict[str, Any]]],
                     corpora: dict[str, dict[str, Any]], pretrained: dict[str, dict[str, Any]],
                     stage_seconds: dict[str, float]) -> dict[str, Any]:
    """Everything the README table and the goals need, in one JSON-able dict."""
    views = list(config.evaluate.views)
    samples = config.study.bootstrap_samples
    tallies = {arm: _arm_tallies(config, runs) for arm, runs in finetuned.items()}
    arms = {arm: _arm_record(arm, runs, views, zero_shot.get(arm, {}), corpora.get(arm), pretrained.get(arm))
            for arm, runs in finetuned.items()}
    delta_vs_a = {}
    for arm in arms:
        if arm == "A" or "A" not in arms:
            continue
        delta_vs_a[arm] = paired_difference(tallies[arm], tallies["A"], samples)
        delta_vs_a[arm]["by_view"] = {view: arms[arm]["f1_mean_by_view"][view] - arms["A"]["f1_mean_by_view"][view]
                                      for view in views}

    teacher_arms = [arm for arm in TEACHER_ARMS if arm in delta_vs_a]
    comparisons: dict[str, Any] = {}
    goals = []
    if teacher_arms:
        best = max(teacher_arms, key=lambda arm: delta_vs_a[arm]["mean"])
        gain = delta_vs_a[best]
        goals.append(_goal(
            "best distilled arm − A ≥ +6.0 F1 (normal view, mean over datasets), 95% interval excluding 0",
            gain["mean"], gain["ci95"], gain["mean"] >= GOAL_DISTILLATION_GAIN and gain["ci95"][0] > 0,
            ">= 6.0 and ci95 low > 0", f"best distilled arm: {best}"))
        if "B" in arms:
            comparisons["best_teacher_minus_B"] = {"arm": best, **paired_difference(tallies[best], tallies["B"],
                                                                                    samples)}
    if {"D", "D_prime"} <= set(arms):
        comparisons["D_minus_D_prime"] = paired_difference(tallies["D"], tallies["D_prime"], samples)
        d = comparisons["D_minus_D_prime"]
        goals.append(_goal("D − D′ > 0 (a better teacher makes a better student)", d["mean"], d["ci95"],
                           d["mean"] > 0, "> 0", "same reviews and prompts, Mixtral vs SmolLM2 answers"))
    if "best_teacher_minus_B" in comparisons:
        b = comparisons["best_teacher_minus_B"]
        goals.append(_goal("best teacher arm − B > 0 (teacher knowledge beyond in-domain text)", b["mean"],
                           b["ci95"], b["mean"] > 0, "> 0", f"best teacher arm: {b['arm']}"))

    return {
        "seeds": list(config.finetune.seeds),
        "datasets": list(config.data.datasets),
        "views": views,
        "design": {
            "student": config.student.model, "vocab_size": config.student.vocab_size,
            "pretrain_steps": config.pretrain.max_steps, "pretrain_batch_size": config.pretrain.batch_size,
            "finetune": config.finetune.model_dump(mode="json"),
            "train_sentences": config.data.max_train_sentences, "dev_sentences": config.data.max_dev_sentences,
            "test": "full test split (test + hard_test)",
            "benchmark_reviews_per_dataset": config.study.benchmark_reviews_per_dataset,
            "teacher": config.teacher.model, "teacher_max_new_tokens": config.generation.max_new_tokens,
            "imported_teacher": config.study.imported_teacher_id, "bootstrap_samples": samples,
        },
        "arms": arms,
        "delta_vs_A": delta_vs_a,
        "comparisons": comparisons,
        "goals": goals,
        "teacher_quality": _teacher_quality(config, generations),
        "stage_seconds": dict(sorted(stage_seconds.items())),
        "total_stage_seconds": round(sum(stage_seconds.values()), 1),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def study_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The headline numbers as flat MLflow metrics."""
    metrics = {f"{arm}/f1_normal_mean": arm_results["f1_normal_mean"] for arm, arm_results in results["arms"].items()}
    for arm, delta in results["delta_vs_A"].items():
        metrics.update({f"{arm}/delta_vs_A": delta["mean"], f"{arm}/delta_vs_A_ci_low": delta["ci95"][0],
                        f"{arm}/delta_vs_A_ci_high": delta["ci95"][1]})
    metrics.update({f"goal_{index + 1}_met": float(goal["met"]) for index, goal in enumerate(results["goals"])})
    return metrics


def report_inputs(results: dict[str, Any], curves: dict[str, list]) -> dict[str, Any]:
    """The run report's inputs: F1 bars per arm, the paired differences, teacher quality and pretraining losses."""
    scores = [{"variant": arm, "dataset": dataset, "seed": int(seed), "view": view, "f1": value / 100}
              for arm, arm_results in results["arms"].items()
              for dataset, by_view in arm_results["f1"].items()
              for view, cell in by_view.items()
              for seed, value in cell["by_seed"].items()]
    quality = {f"{arm}: {figures.get('teacher')}": figures for arm, figures in results["teacher_quality"].items()}
    summary = {goal["goal"]: f"{'met' if goal['met'] else 'missed'}: {goal['value']:+.2f} "
                             f"[{goal['ci95'][0]:+.2f}, {goal['ci95'][1]:+.2f}]" for goal in results["goals"]}
    return {
        "title": f"fsa-distill study — MLflow run {results.get('mlflow_run_id', '')}",
        "summary": summary,
        "scores": scores,
        "deltas": {arm: {"mean": d["mean"], "ci95": d["ci95"]} for arm, d in results["delta_vs_A"].items()},
        "teacher_quality": quality,
        "curves": {name.replace("/train/", "/train_").replace("/eval/", "/eval_"): points
                   for name, points in curves.items()},
    }


def write_results(results: dict[str, Any], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, results, default=str)
    return path


def markdown_tables(results: dict[str, Any]) -> str:
    """The README's tables, straight from the results: F1 per arm, teacher quality, goals (F1 × 100)."""
    datasets = results["datasets"]
    lines = ["| arm | " + " | ".join(f"{d} normal" for d in datasets)
             + " | mean normal | mean implicit | mean multi | Δ normal vs A [95% CI] | best dev, "
             + " / ".join(datasets) + " | zero-shot acc / macro-F1 |",
             "|---" * (len(datasets) + 7) + "|"]
    for arm, arm_results in results["arms"].items():
        f1 = arm_results["f1"]
        delta = results["delta_vs_A"].get(arm)
        zero = arm_results["zero_shot"]
        dev = arm_results["dev_f1"]
        lines.append(
            f"| {arm_results['label']} | "
            + " | ".join(f"{f1[d]['normal']['mean']:.1f} ± {f1[d]['normal']['std']:.1f}" for d in datasets)
            + f" | **{arm_results['f1_normal_mean']:.1f}** | {arm_results['f1_mean_by_view']['implicit']:.1f}"
            f" | {arm_results['f1_mean_by_view']['multi']:.1f} | "
            + (f"{delta['mean']:+.1f} [{delta['ci95'][0]:+.1f}, {delta['ci95'][1]:+.1f}]" if delta else "–")
            + " | " + " / ".join(f"{dev[d]['mean']:.1f}" for d in datasets)
            + " | " + ", ".join(f"{z['accuracy']:.2f} / {z['macro_f1']:.2f}" for z in zero.values()) + " |")
    lines += ["", ("| teacher (arm) | answers accepted | gold-scored analyses | pair P / R / F1 | target F1 |"
                  " rejections |"), "|---|---|---|---|---|---|"]
    for arm, q in results["teacher_quality"].items():
        scored = "pair_f1" in q
        lines.append(
            f"| {q.get('teacher')} ({arm}) | {q['accepted']}/{q['answers']} ({100 * q['acceptance_rate']:.0f}%) | "
            f"{q['gold_analyses']} | "
            + (f"{100 * q['pair_precision']:.1f} / {100 * q['pair_recall']:.1f} / {100 * q['pair_f1']:.1f} | "
               f"{100 * q['target_f1']:.1f}" if scored else "– | –")
            + " | " + ", ".join(f"{reason} {n}" for reason, n in sorted(q["rejected_by_reason"].items(),
                                                                         key=lambda item: -item[1])) + " |")
    lines += ["", "| arm | dataset | distinct test outputs per seed | most common output (share of sentences) |",
              "|---|---|---|---|"]
    for arm, arm_results in results["arms"].items():
        for dataset, by_seed in arm_results.get("predictions", {}).items():
            profiles = [by_seed[seed] for seed in sorted(by_seed)]
            lines.append(f"| {arm} | {dataset} | {', '.join(str(p['distinct']) for p in profiles)} | "
                         + "; ".join((f"`{p['top']}`" if p["top"] else "(nothing)").replace("|", "\\|")
                                     + f" ({100 * p['top_share']:.0f}%)" for p in profiles) + " |")
    lines += ["", "| goal | value [95% CI] | met? |", "|---|---|---|"]
    for goal in results["goals"]:
        lines.append(f"| {goal['goal']} ({goal['detail']}) | {goal['value']:+.2f} "
                     f"[{goal['ci95'][0]:+.2f}, {goal['ci95'][1]:+.2f}] | {'met' if goal['met'] else 'missed'} |")
    return "\n".join(lines)
