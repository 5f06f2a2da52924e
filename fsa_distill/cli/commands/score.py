"""`fsa-distill score`: micro P/R/F1 of a prediction file against benchmark gold, with the paper's protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from fsa_distill.cli.console import print_json, user_errors
from fsa_distill.core.errors import InputError


def score(
    task: Annotated[Literal["atsa", "acsa"], typer.Option(help="Which elements to score: terms or categories.")],
    gold: Annotated[Path, typer.Option(help="Benchmark JSON file, e.g. .../atsa/rest14/test.json.")],
    pred: Annotated[Path, typer.Option(help='JSONL, one {"prediction": "..."} per gold sentence, in order.')],
    hard: Annotated[
        Path | None, typer.Option(help="hard_test.json, appended to --gold (the paper's test set).")
    ] = None,
    view: Annotated[Literal["normal", "implicit", "multi"], typer.Option(help="Sentences to score.")] = "normal",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """Score predictions: precision, recall, F1 (micro over pairs), n_gold, n_pred, n_sentences."""
    from fsa_distill.benchmark.data import check_gold_for_task, read_benchmark_file
    from fsa_distill.benchmark.scorer import read_prediction_file, score_predictions
    from fsa_distill.core.paths import check_input_file

    with user_errors():
        check_input_file(gold, "gold file")
        if hard is not None:
            check_input_file(hard, "gold file (--hard)")
        check_input_file(pred, "prediction file")
        sentences = read_benchmark_file(gold)
        gold_files = str(gold)
        if hard is not None:
            sentences += read_benchmark_file(hard)
            gold_files = f"{gold} + {hard}"
        check_gold_for_task(sentences, task, gold_files)
        predictions = read_prediction_file(pred)
        if len(predictions) != len(sentences):
            raise InputError(pred, None, f"{len(predictions)} predictions but {len(sentences)} gold sentences in "
                             f"{gold_files}; write one line per gold sentence, in gold order")
        result = score_predictions(task, sentences, predictions, view=view)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{task} {view}: precision {result['precision']:.4f}  recall {result['recall']:.4f}  "
               f"f1 {result['f1']:.4f}  ({result['n_pred']} predicted / {result['n_gold']} gold pairs, "
               f"{result['n_sentences']} sentences)")
