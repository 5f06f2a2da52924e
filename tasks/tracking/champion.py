"""This run against the champion it was gated against: per dataset and view, both F1s, the difference and a
paired bootstrap 95% interval.

The champion's own test predictions (logged on its MLflow run as `predictions/<dataset>/seed-<seed>/`) are
rescored here with the same scorer as this run's, on the same test sentences, so the two F1s differ only by the
models. Each run records a digest of every test set it scored (tag `test_set.<task>/<dataset>`); a champion
whose digest differs (another benchmark revision, another subsample) or is missing is "not comparable" and gets
no difference. The interval is the study's paired bootstrap (benchmark/stats.py): the same resampled
sentences and the same resampled seeds for both models, over the seeds both runs fine-tuned with.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fsa_distill.benchmark.stats import micro_f1, paired_difference, sentence_tallies
from fsa_distill.core.digests import sha256_text

TEST_SET_TAG = "test_set."  # + "atsa/rest14" → sha256 of the test sentences the run scored
BOOTSTRAP_SAMPLES = 2000  # enough for a stable 95% interval; a few hundred ms per dataset × view
PREDICTIONS_FILE = "test_predictions.jsonl"


def scored_set_digest(sentences: Sequence[Mapping[str, Any]]) -> str:
    """Content digest of a test set, independent of the files' layout (key order, whitespace)."""
    return sha256_text(json.dumps(list(sentences), sort_keys=True, ensure_ascii=False))


def scored_set_tags(test_sets: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, str]:
    """MLflow tags recording which test sentences a run scored, one per `task/dataset`."""
    return {f"{TEST_SET_TAG}{dataset}": scored_set_digest(sentences) for dataset, sentences in test_sets.items()}


def predictions_artifact(dataset: str, seed: int) -> str:
    """Where the flow logs a fine-tuning run's test predictions on the parent MLflow run."""
    return f"predictions/{dataset}/seed-{seed}"


def _champion_predictions(client: Any, run_id: str, dataset: str, seeds: Sequence[int],
                          folder: Path) -> dict[int, list[str]]:
    """The champion's raw test outputs per seed among `seeds` that its run logged."""
    from mlflow.exceptions import MlflowException

    from fsa_distill.benchmark.scorer import read_prediction_file

    found = {}
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        try:
            path = client.download_artifacts(run_id, f"{predictions_artifact(dataset, seed)}/{PREDICTIONS_FILE}",
                                             str(folder))
        except (MlflowException, OSError):
            continue
        found[seed] = read_prediction_file(Path(path))
    return found


def _view_tallies(task: str, sentences: Sequence[Mapping[str, Any]], by_seed: Mapping[int, Sequence[str]],
                  views: Sequence[str]) -> dict[str, dict[int, np.ndarray]]:
    """Per view, per seed, the per-sentence tallies of that view's sentences."""
    from fsa_distill.benchmark.scorer import view_mask

    tallies = {seed: sentence_tallies(task, sentences, predictions) for seed, predictions in by_seed.items()}
    return {view: {seed: rows[np.asarray(view_mask(sentences, view), dtype=bool)] for seed, rows in tallies.items()}
            for view in views}


def _compare_dataset(dataset: str, sentences: Sequence[Mapping[str, Any]], ours: Mapping[int, Sequence[str]],
                     theirs: Mapping[int, Sequence[str]], views: Sequence[str], samples: int) -> list[dict]:
    """One row per view for a dataset whose test set both runs scored."""
    task = dataset.split("/")[0]
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return [_not_comparable(dataset, "the champion logged no test predictions for this run's seeds")]
    if any(len(theirs[seed]) != len(sentences) for seed in seeds):
        return [_not_comparable(dataset, "the champion's predictions do not match the test set line for line")]
    new = _view_tallies(task, sentences, {seed: ours[seed] for seed in seeds}, views)
    old = _view_tallies(task, sentences, {seed: theirs[seed] for seed in seeds}, views)
    rows = []
    for view in views:
        n = int(next(iter(new[view].values())).shape[0])
        f1 = float(np.mean([micro_f1(new[view][seed].sum(0)) for seed in seeds]))
        champion_f1 = float(np.mean([micro_f1(old[view][seed].sum(0)) for seed in seeds]))
        row = {"dataset": dataset, "view": view, "comparable": True, "f1": f1, "champion_f1": champion_f1,
               "delta": 100 * (f1 - champion_f1), "ci95": None, "seeds": seeds, "n_sentences": n}
        if n:
            difference = paired_difference({dataset: new[view]}, {dataset: old[view]}, samples)
            row["ci95"] = difference["ci95"]
        rows.append(row)
    return rows


def _not_comparable(dataset: str, reason: str) -> dict[str, Any]:
    return {"dataset": dataset, "view": None, "comparable": False, "reason": reason}


def compare_with_champion(
    tracking_uri: str,
    champion_run_id: str | None,
    champion_version: str | None,
    runs: Sequence[Mapping[str, Any]],
    test_sets: Mapping[str, Sequence[Mapping[str, Any]]],
    views: Sequence[str],
    samples: int = BOOTSTRAP_SAMPLES,
) -> dict[str, Any]:
    """`runs`: this run's fine-tuning records (`dataset`, `seed`, `predictions_path`); `test_sets`: the test
    sentences they were scored on. Returns {"champion_run_id", "champion_version", "rows": [...]}: a row per
    dataset × view with `f1`, `champion_f1` (0-1), `delta` and `ci95` (F1 × 100), or one `comparable: False` row
    per dataset with the reason. No champion before this run: no rows."""
    from mlflow.tracking import MlflowClient

    from fsa_distill.benchmark.scorer import read_prediction_file

    result: dict[str, Any] = {"champion_run_id": champion_run_id, "champion_version": champion_version, "rows": []}
    if champion_run_id is None:
        return result
    client = MlflowClient(tracking_uri)
    champion_tags = client.get_run(champion_run_id).data.tags
    ours: dict[str, dict[int, list[str]]] = {}
    for run in runs:
        ours.setdefault(run["dataset"], {})[int(run["seed"])] = read_prediction_file(Path(run["predictions_path"]))
    with tempfile.TemporaryDirectory(prefix="fsa-champion-") as temp:
        for dataset, by_seed in ours.items():
            recorded = champion_tags.get(f"{TEST_SET_TAG}{dataset}")
            if recorded is None:
                result["rows"].append(_not_comparable(dataset, "the champion's run recorded no test set for it"))
            elif recorded != scored_set_digest(test_sets[dataset]):
                result["rows"].append(_not_comparable(dataset, "the champion was scored on another test set"))
            else:
                theirs = _champion_predictions(client, champion_run_id, dataset, sorted(by_seed),
                                               Path(temp) / dataset.replace("/", "-"))
                result["rows"].extend(_compare_dataset(dataset, test_sets[dataset], by_seed, theirs, views, samples))
    return result


def comparison_metrics(comparison: Mapping[str, Any]) -> dict[str, float]:
    """MLflow metrics such as `vs_champion.atsa-rest14.normal.delta` (F1s 0-1, delta and interval × 100)."""
    metrics = {}
    for row in comparison.get("rows", []):
        if not row["comparable"]:
            continue
        prefix = f"vs_champion.{row['dataset'].replace('/', '-')}.{row['view']}"
        metrics.update({f"{prefix}.f1": row["f1"], f"{prefix}.champion_f1": row["champion_f1"],
                        f"{prefix}.delta": row["delta"]})
        if row["ci95"]:
            metrics.update({f"{prefix}.ci95_low": row["ci95"][0], f"{prefix}.ci95_high": row["ci95"][1]})
    return metrics


def comparison_lines(comparison: Mapping[str, Any]) -> list[list[str]]:
    """Table rows (dataset, view, F1, champion F1, Δ, 95% interval; F1 × 100) for the report and the terminal."""
    lines = []
    for row in comparison.get("rows", []):
        if not row["comparable"]:
            lines.append([row["dataset"], "all", "–", "–", "not comparable", row["reason"]])
            continue
        interval = f"[{row['ci95'][0]:+.2f}, {row['ci95'][1]:+.2f}]" if row["ci95"] else "– (empty view)"
        lines.append([row["dataset"], row["view"], f"{100 * row['f1']:.2f}", f"{100 * row['champion_f1']:.2f}",
                      f"{row['delta']:+.2f}", interval])
    return lines


def load_test_sets(config: Any) -> dict[str, list[dict[str, Any]]]:
    """The test sentences every configured `task/dataset` is scored on (with the config's subsampling)."""
    from fsa_distill.benchmark.data import load_task_data

    return {dataset: load_task_data(*dataset.split("/"), config.data)["test"] for dataset in config.data.datasets}


def versus_champion(config: Any, registration: Mapping[str, Any], runs: Sequence[Mapping[str, Any]],
                    test_sets: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """This run against the champion `register_student` gated it against (`champion_*_before`)."""
    return compare_with_champion(config.mlflow_uri, registration.get("champion_run_id_before"),
                                 registration.get("champion_version_before"), runs, test_sets,
                                 list(config.evaluate.views))
