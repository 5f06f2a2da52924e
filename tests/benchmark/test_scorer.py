"""Scorer parity with the paper's protocol: hand-computed cases, real-data views, the evaluate metric, the CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from fsa_distill.benchmark.data import load_sentences, load_split
from fsa_distill.benchmark.scorer import (
    METRIC_DIR,
    read_prediction_file,
    score_aspects_only,
    score_pairs,
    score_predictions,
    view_mask,
    write_prediction_file,
)
from fsa_distill.benchmark.targets import POLARITIES, linearise
from fsa_distill.cli.commands.bench import scorer as bench_scorer_command
from fsa_distill.cli.commands.score import score as score_command
from fsa_distill.core.errors import InputError
from fsa_distill.perf.bench_scorer import naive_score, run, synthetic_benchmark

DATASETS = ["atsa/rest14", "atsa/laptop14", "acsa/rest16", "acsa/laptop16"]


def atsa(text, *terms):
    """A sentence with aspects (term, polarity); offsets of the n-th occurrence when a term repeats."""
    aspects, seen = [], {}
    for term, polarity in terms:
        start = text.index(term, seen.get(term, -1) + 1)
        seen[term] = start
        aspects.append({"from": str(start), "to": str(start + len(term)), "target": term, "category": None,
                        "polarity": polarity})
    return {"ID": text[:10], "sentence": text, "aspects": aspects}


def prf(result):
    return pytest.approx((result["precision"], result["recall"], result["f1"]))


# --------------------------------------------------------------------------- hand-computed cases

def test_perfect_prediction():
    sentence = atsa("The bread is great, the staff rude.", ("bread", "positive"), ("staff", "negative"))
    result = score_predictions("atsa", [sentence], ["bread | positive ; staff | negative"])
    assert prf(result) == (1.0, 1.0, 1.0)
    assert (result["n_gold"], result["n_pred"], result["n_sentences"]) == (2, 2, 1)


def test_term_twice_in_gold_counts_twice_and_predicted_duplicates_count_each():
    sentence = atsa("food here, food there, and the wine", ("food", "positive"), ("food", "positive"),
                    ("wine", "negative"))
    # gold: food, food, wine (3). One "food" prediction covers both gold occurrences (membership, not matching).
    result = score_predictions("atsa", [sentence], ["food | positive"])
    assert prf(result) == (1.0, 2 / 3, 0.8)
    # predicted duplicates each count in precision: 3 of 4 predicted pairs are in gold.
    prediction = "food | positive ; food | positive ; wine | negative ; wine | positive"
    result = score_predictions("atsa", [sentence], [prediction])
    assert prf(result) == (3 / 4, 1.0, 2 * 0.75 / 1.75)
    assert (result["n_gold"], result["n_pred"]) == (3, 4)


def test_conflict_is_a_label_of_its_own():
    sentence = atsa("The pasta was good and bad.", ("pasta", "conflict"))
    assert prf(score_predictions("atsa", [sentence], ["pasta | conflict"])) == (1.0, 1.0, 1.0)
    assert prf(score_predictions("atsa", [sentence], ["pasta | positive"])) == (0.0, 0.0, 0.0)


def test_invalid_pieces_and_absent_terms_are_dropped_not_counted_wrong():
    sentence = atsa("The pizza and the beer.", ("pizza", "positive"), ("beer", "neutral"))
    prediction = ("pizza | positive ; beer neutral ; beer | fine ; beer | neutral | x ; burger | negative ; "
                  "Pizza | positive ; ; pizza | positive")
    result = score_predictions("atsa", [sentence], [prediction])
    # valid: pizza|positive twice; everything else is dropped before scoring
    assert (result["n_pred"], result["n_gold"]) == (2, 2)
    assert prf(result) == (1.0, 0.5, 2 / 3)


def test_empty_predictions_and_empty_gold():
    with_gold = atsa("Nice staff.", ("staff", "positive"))
    no_gold = {"ID": "x", "sentence": "I went there on Monday.", "aspects": []}
    # nothing predicted: precision 1 by definition, recall 0
    assert prf(score_predictions("atsa", [with_gold], [""])) == (1.0, 0.0, 0.0)
    # nothing to find and nothing predicted: both 1
    assert prf(score_predictions("atsa", [no_gold], [""])) == (1.0, 1.0, 1.0)
    # no gold but something predicted: recall 1 by definition, precision 0
    assert prf(score_predictions("atsa", [no_gold], ["Monday | neutral"])) == (0.0, 1.0, 0.0)
    assert prf(score_pairs([], [])) == (1.0, 1.0, 1.0)


def test_aspects_only_ignores_polarity_but_not_the_term():
    sentence = atsa("The soup was cold, the bread fine.", ("soup", "negative"), ("bread", "positive"))
    prediction = "soup | positive ; bread | positive ; wine | negative"  # soup: wrong polarity; wine: not in the review, dropped
    assert prf(score_predictions("atsa", [sentence], [prediction])) == (0.5, 0.5, 0.5)
    assert prf(score_aspects_only("atsa", [sentence], [prediction])) == (1.0, 1.0, 1.0)
    assert prf(score_aspects_only("atsa", [sentence], ["soup | negative"])) == (1.0, 0.5, 2 / 3)


def test_micro_average_over_sentences_and_no_credit_across_sentences():
    first = atsa("The soup and the bread.", ("soup", "positive"), ("bread", "positive"))
    second = atsa("The soup was cold.", ("soup", "negative"))
    third = {"ID": "3", "sentence": "We came by bus with soup.", "aspects": []}
    predictions = [
        "soup | positive",  # 1 of 1 correct; finds 1 of 2 gold
        "soup | negative ; soup | positive",  # 1 of 2 correct ("soup | positive" is gold only in sentence 1)
        "soup | positive",  # wrong: no gold here, although the same pair is gold in sentence 1
    ]
    result = score_predictions("atsa", [first, second, third], predictions)
    precision, recall = 2 / 4, 2 / 3
    assert prf(result) == (precision, recall, 2 * precision * recall / (precision + recall))
    assert (result["n_gold"], result["n_pred"], result["n_sentences"]) == (3, 4, 3)


def test_acsa_scores_normalised_categories():
    sentence = {"ID": "1", "sentence": "Yum! Slow service though.", "aspects": [
        {"from": None, "to": None, "target": None, "category": "FOOD#QUALITY", "polarity": "positive"},
        {"from": None, "to": None, "target": None, "category": "SERVICE#GENERAL", "polarity": "negative"},
        {"from": None, "to": None, "target": None, "category": "FOOD#QUALITY", "polarity": "positive"}]}
    result = score_predictions("acsa", [sentence], ["food quality | positive ; SERVICE#GENERAL | negative"])
    assert (result["n_gold"], result["n_pred"]) == (2, 2)
    assert prf(result) == (0.5, 0.5, 0.5)


def test_views_select_sentences():
    implicit = atsa("Cheap food.", ("food", "positive"))
    implicit["aspects"][0]["opinion_words"] = []
    explicit_multi = atsa("Good food, bad staff.", ("food", "positive"), ("staff", "negative"))
    for item, words in zip(explicit_multi["aspects"], ("Good", "bad")):
        item["opinion_words"] = words
    missing_words = atsa("The staff.", ("staff", "neutral"))  # no opinion_words key: implicit too
    sentences = [implicit, explicit_multi, missing_words]
    assert view_mask(sentences, "normal") == [True, True, True]
    assert view_mask(sentences, "implicit") == [True, False, True]
    assert view_mask(sentences, "multi") == [False, True, False]
    result = score_predictions("atsa", sentences, ["", "food | positive ; staff | negative", ""], view="multi")
    assert result["n_sentences"] == 1 and result["f1"] == 1.0
    with pytest.raises(ValueError, match="unknown view"):
        view_mask(sentences, "hard")


def test_count_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 gold sentences but 1 predictions"):
        score_predictions("atsa", [atsa("a b", ("a", "positive"))] * 2, [""])


def test_same_numbers_as_the_papers_quadratic_scorer_on_random_noisy_outputs():
    sentences, predictions = synthetic_benchmark(3000, seed=7)
    rng = random.Random(7)
    noisy = [prediction if rng.random() < 0.7 else f"{prediction} ; {rng.choice(['x', 'w1'])} | "
             f"{rng.choice(POLARITIES)}" for prediction in predictions]
    for view_predictions in (predictions, noisy, [""] * len(predictions)):
        fast = score_predictions("atsa", sentences, view_predictions)
        slow = naive_score("atsa", sentences, view_predictions)
        assert prf(fast) == (slow["precision"], slow["recall"], slow["f1"])


# --------------------------------------------------------------------------- real data

@pytest.mark.parametrize("name", DATASETS)
def test_gold_linearisation_of_the_real_test_split_scores_one(benchmark_dir, name):
    task, dataset = name.split("/")
    sentences = load_sentences(task, dataset, "test", benchmark_dir)
    result = score_predictions(task, sentences, [linearise(sentence, task) for sentence in sentences])
    assert result["f1"] == 1.0 and result["precision"] == 1.0 and result["recall"] == 1.0
    assert result["n_gold"] > 900


@pytest.mark.parametrize(("name", "counts"), [
    ("atsa/rest14", {"normal": 1140, "implicit": 477, "multi": 189}),
    ("atsa/laptop14", {"normal": 1037, "implicit": 345, "multi": 99}),
    ("acsa/rest16", {"normal": 1016, "implicit": 484, "multi": 146}),
    ("acsa/laptop16", {"normal": 1045, "implicit": 462, "multi": 94}),
])
def test_views_on_real_test_splits(benchmark_dir, name, counts):
    task, dataset = name.split("/")
    sentences = load_sentences(task, dataset, "test", benchmark_dir)
    for view, expected in counts.items():
        mask = view_mask(sentences, view)
        assert sum(mask) == expected
        # the HF rows (normalised opinion words) select the same sentences as the raw dicts
        assert view_mask(list(load_split(task, dataset, "test", benchmark_dir)), view) == mask
    implicit = [s for s, keep in zip(sentences, view_mask(sentences, "implicit")) if keep]
    assert all(any(not a.get("opinion_words") for a in s["aspects"]) for s in implicit)
    multi = [s for s, keep in zip(sentences, view_mask(sentences, "multi")) if keep]
    assert all(len({a["polarity"] for a in s["aspects"]}) > 1 for s in multi)


# --------------------------------------------------------------------------- evaluate metric

def test_evaluate_metric_loads_offline_from_its_folder_and_agrees_with_the_scorer(benchmark_dir, tmp_path):
    sentences = load_sentences("atsa", "rest14", "test", benchmark_dir)[:300]
    rng = random.Random(0)
    outputs = [linearise(s, "atsa") if rng.random() < 0.6 else "food | positive" for s in sentences]
    acsa_sentences = load_sentences("acsa", "rest16", "test", benchmark_dir)[:300]
    acsa_outputs = [linearise(s, "acsa") if rng.random() < 0.6 else "food quality | negative"
                    for s in acsa_sentences]
    payload = tmp_path / "inputs.json"
    payload.write_text(json.dumps({
        "atsa": [outputs, [linearise(s, "atsa") for s in sentences], [s["sentence"] for s in sentences]],
        "acsa": [acsa_outputs, [linearise(s, "acsa") for s in acsa_sentences]],
    }))
    script = f"""
import json, evaluate
data = json.load(open({str(payload)!r}))
atsa = evaluate.load({str(METRIC_DIR)!r}, "atsa")
acsa = evaluate.load({str(METRIC_DIR)!r}, "acsa")
predictions, references, sentences = data["atsa"]
print(json.dumps([atsa.compute(predictions=predictions, references=references, sentences=sentences),
                  acsa.compute(predictions=data["acsa"][0], references=data["acsa"][1])]))
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "m"),
           "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    metric_atsa, metric_acsa = json.loads(done.stdout.strip().splitlines()[-1])
    assert metric_atsa == pytest.approx(score_predictions("atsa", sentences, outputs))
    assert metric_acsa == pytest.approx(score_predictions("acsa", acsa_sentences, acsa_outputs))
    assert metric_atsa["f1"] < 1.0


# --------------------------------------------------------------------------- prediction files and the CLI

def cli(command) -> typer.Typer:
    """A one-command app around our command function (the full CLI also wires other engineers' commands)."""
    app = typer.Typer()
    app.command()(command)
    app.command("unused")(lambda: None)  # two commands keep typer from collapsing into a single-command app
    return app


def invoke(command, *args):
    result = CliRunner().invoke(cli(command), [command.__name__, *map(str, args)])
    return result, " ".join(result.stderr.split())


@pytest.fixture
def gold_files(tmp_path):
    gold = [atsa("The bread is great.", ("bread", "positive")), atsa("Bad staff.", ("staff", "negative"))]
    hard = [atsa("Cold soup, warm staff.", ("soup", "negative"), ("staff", "positive"))]
    hard[0]["aspects"][0]["opinion_words"] = "Cold"
    for item in gold:
        item["aspects"][0]["opinion_words"] = []
    gold_path, hard_path = tmp_path / "test.json", tmp_path / "hard_test.json"
    gold_path.write_text(json.dumps(gold), encoding="utf-8-sig")  # the benchmark's BOM
    hard_path.write_text(json.dumps(hard), encoding="utf-8-sig")
    return gold_path, hard_path


def test_score_cli_prints_one_json_line(gold_files, tmp_path):
    gold, hard = gold_files
    pred = write_prediction_file(tmp_path / "pred.jsonl",
                                 ["bread | positive", "staff | positive", "soup | negative ; staff | positive"])
    result, _ = invoke(score_command, "--task", "atsa", "--gold", gold, "--hard", hard, "--pred", pred, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"precision", "recall", "f1", "n_gold", "n_pred", "n_sentences"}
    assert payload["precision"] == pytest.approx(3 / 4) and payload["recall"] == pytest.approx(3 / 4)
    assert (payload["n_gold"], payload["n_pred"], payload["n_sentences"]) == (4, 4, 3)
    result, _ = invoke(score_command, "--task", "atsa", "--gold", gold, "--hard", hard, "--pred", pred,
                       "--view", "implicit", "--json")
    assert json.loads(result.stdout)["n_sentences"] == 3  # the hard sentence has an aspect without opinion words
    result, _ = invoke(score_command, "--task", "atsa", "--gold", gold, "--hard", hard, "--pred", pred,
                       "--view", "multi")
    assert result.exit_code == 0 and "f1 1.0000" in result.stdout


def test_score_cli_count_mismatch_names_both_counts_and_files(gold_files, tmp_path):
    gold, hard = gold_files
    pred = write_prediction_file(tmp_path / "pred.jsonl", ["bread | positive", ""])
    result, stderr = invoke(score_command, "--task", "atsa", "--gold", gold, "--hard", hard, "--pred", pred, "--json")
    assert result.exit_code == 2
    assert "2 predictions but 3 gold sentences" in stderr
    assert str(pred) in stderr and str(gold) in stderr and str(hard) in stderr
    assert result.stdout == ""


def test_score_cli_malformed_jsonl_names_file_and_line(gold_files, tmp_path):
    gold, _ = gold_files
    pred = tmp_path / "pred.jsonl"
    pred.write_text('{"prediction": "bread | positive"}\n{"prediction": "x"\n', encoding="utf-8")
    result, stderr = invoke(score_command, "--task", "atsa", "--gold", gold, "--pred", pred, "--json")
    assert result.exit_code == 2
    assert f"{pred}: line 2" in stderr
    pred.write_text('{"prediction": "bread | positive"}\n["x"]\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2"):
        read_prediction_file(pred)


def test_score_cli_rejects_unknown_task(gold_files, tmp_path):
    gold, _ = gold_files
    result, _ = invoke(score_command, "--task", "asqp", "--gold", gold, "--pred", tmp_path / "p.jsonl")
    assert result.exit_code == 2


def test_prediction_file_round_trip_keeps_odd_characters(tmp_path):
    predictions = ["bread | positive", "", "caf\u00e9 \u2028 line | neutral"]
    assert read_prediction_file(write_prediction_file(tmp_path / "p.jsonl", predictions)) == predictions


# --------------------------------------------------------------------------- performance benchmark

def test_bench_scorer_runs_on_a_small_input(tmp_path):
    out = tmp_path / "scorer.json"
    result = run(n_pairs=3000, naive_pairs=500, out_path=out)
    assert json.loads(out.read_text()) == result
    assert result["n_pred_pairs"] > 2000 and result["seconds"] > 0
    assert result["baseline"]["same_scores_on_subset"] is True
    assert result["speedup_vs_naive_extrapolated"] > 1


def test_bench_scorer_cli_prints_json():
    result, _ = invoke(bench_scorer_command, "--n-pairs", 2000, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["benchmark"] == "scorer"


def test_installed_cli_scores_the_real_test_split(benchmark_dir, tmp_path):
    sentences = load_sentences("atsa", "laptop14", "test", benchmark_dir)
    pred = write_prediction_file(tmp_path / "pred.jsonl", [linearise(s, "atsa") for s in sentences])
    folder = benchmark_dir / "atsa" / "laptop14"
    command = [sys.executable, "-m", "fsa_distill.cli", "score", "--task", "atsa", "--gold", str(folder / "test.json"),
               "--hard", str(folder / "hard_test.json"), "--pred", str(pred), "--json"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "n_gold": 944, "n_pred": 944,
                                       "n_sentences": 1037}
    done = subprocess.run(command[:-5] + ["--pred", str(pred), "--json"], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "1037 predictions but 800 gold sentences" in " ".join(done.stderr.split())
