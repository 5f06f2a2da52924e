"""tasks/tracking/champion.py: this run vs the champion it was gated against, on the same test sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fsa_distill.benchmark.scorer import score_predictions, write_prediction_file
from fsa_distill.tasks.tracking.champion import (
    PREDICTIONS_FILE,
    compare_with_champion,
    comparison_lines,
    comparison_metrics,
    predictions_artifact,
    scored_set_tags,
)
from fsa_distill.tasks.tracking.report import build_report

DATASET = "atsa/rest14"
TERMS = ["pizza", "waiter", "wine", "pasta", "bill", "music"]


def _sentences(n: int = 60) -> list[dict]:
    """Synthetic benchmark sentences: two aspects each; every third one of mixed polarity (the multi view)."""
    sentences = []
    for i in range(n):
        first, second = TERMS[i % 6], TERMS[(i + 1) % 6]
        text = f"The {first} was fine and the {second} was not."
        polarity = "negative" if i % 3 == 0 else "positive"
        sentences.append({"sentence": text, "aspects": [
            {"target": first, "polarity": "positive", "from": 4, "to": 4 + len(first), "opinion_words": ["fine"]},
            {"target": second, "polarity": polarity, "from": 0, "to": 0, "opinion_words": []},
        ]})
    return sentences


def _predictions(sentences: list[dict], right_every: int) -> list[str]:
    """Both pairs right on every `right_every`-th sentence, else the second aspect's polarity flipped."""
    outputs = []
    for i, sentence in enumerate(sentences):
        first, second = (a["target"] for a in sentence["aspects"])
        polarity = sentence["aspects"][1]["polarity"] if i % right_every == 0 else "neutral"
        outputs.append(f"{first} | positive ; {second} | {polarity}")
    return outputs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One tracking store for the module: creating a SQLite store runs MLflow's migrations (seconds)."""
    tmp_path = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = MlflowClient(uri).create_experiment("vs", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, experiment


def _champion_run(store, tmp_path: Path, test_set: list[dict], predictions: dict[int, list[str]]) -> str:
    uri, experiment = store
    client = MlflowClient(uri)
    run_id = client.create_run(experiment, tags=scored_set_tags({DATASET: test_set})).info.run_id
    for seed, outputs in predictions.items():
        path = write_prediction_file(tmp_path / "champion" / str(seed) / PREDICTIONS_FILE, outputs)
        client.log_artifact(run_id, str(path), predictions_artifact(DATASET, seed))
    return run_id


def _our_runs(tmp_path: Path, predictions: dict[int, list[str]]) -> list[dict]:
    return [{"dataset": DATASET, "seed": seed,
             "predictions_path": str(write_prediction_file(tmp_path / "ours" / f"{seed}.jsonl", outputs))}
            for seed, outputs in predictions.items()]


def test_champion_rescored_on_the_same_sentences_with_a_paired_interval(store, tmp_path: Path) -> None:
    sentences = _sentences()
    theirs = {42: _predictions(sentences, 3), 52: _predictions(sentences, 2), 99: _predictions(sentences, 2)}
    ours = {42: _predictions(sentences, 1), 52: _predictions(sentences, 1)}  # every pair right
    champion = _champion_run(store, tmp_path, sentences, theirs)
    comparison = compare_with_champion(store[0], champion, "1", _our_runs(tmp_path, ours), {DATASET: sentences},
                                       ["normal", "multi"], samples=500)
    rows = {row["view"]: row for row in comparison["rows"]}
    assert set(rows) == {"normal", "multi"} and all(row["comparable"] for row in rows.values())
    normal = rows["normal"]
    assert normal["seeds"] == [42, 52]  # seed 99 has no partner in this run
    champion_f1 = (score_predictions("atsa", sentences, theirs[42])["f1"]
                   + score_predictions("atsa", sentences, theirs[52])["f1"]) / 2
    assert normal["champion_f1"] == pytest.approx(champion_f1)  # the same scorer, the same sentences
    assert normal["f1"] == pytest.approx(1.0)
    assert normal["delta"] == pytest.approx(100 * (1 - champion_f1))
    low, high = normal["ci95"]
    assert 0 < low < normal["delta"] < high  # a real improvement: the interval excludes 0
    assert rows["multi"]["n_sentences"] == 20
    metrics = comparison_metrics(comparison)
    assert metrics["vs_champion.atsa-rest14.normal.delta"] == pytest.approx(normal["delta"])
    page = build_report({"versus_champion": comparison}, tmp_path / "report").read_text(encoding="utf-8")
    assert "This run vs the champion" in page and f"{normal['delta']:+.2f}" in page and "[+" in page


def test_another_test_set_is_not_comparable(store, tmp_path: Path) -> None:
    sentences = _sentences()
    champion = _champion_run(store, tmp_path, sentences[:50], {42: _predictions(sentences[:50], 2)})
    comparison = compare_with_champion(store[0], champion, "1", _our_runs(tmp_path, {42: _predictions(sentences, 1)}),
                                       {DATASET: sentences}, ["normal"], samples=100)
    assert comparison["rows"] == [{"dataset": DATASET, "view": None, "comparable": False,
                                   "reason": "the champion was scored on another test set"}]
    assert comparison_metrics(comparison) == {}
    assert comparison_lines(comparison)[0][4] == "not comparable"


def test_no_champion_before_the_run_means_nothing_to_compare(tmp_path: Path) -> None:
    comparison = compare_with_champion("sqlite:///unused.db", None, None, [], {}, ["normal"])
    assert comparison["rows"] == []
    page = build_report({"versus_champion": comparison}, tmp_path / "report").read_text(encoding="utf-8")
    assert "no champion before this run" in page
