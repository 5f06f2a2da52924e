"""`fsa-distill predict` (student outputs for reviews or a benchmark split) and `fsa-distill zeroshot`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from fsa_distill.cli.console import print_json, user_errors
from fsa_distill.core.errors import InputError

SPLIT_SPEC = re.compile(r"^(atsa|acsa)/([\w.-]+)/(train|dev|test|hard_test)$")


# The student reads at most this many tokens per text (tasks/predict.generate_with's max_source_length).
STUDENT_INPUT_TOKENS = 512


def _cut(records: list[dict[str, Any]], max_chars: int) -> list[dict[str, Any]]:
    """Benchmark sentences cut like review files (`read_review_corpus(max_chars=...)`)."""
    return [{**record, "text": record["text"][:max_chars], "cut_chars": len(record["text"]) - max_chars}
            if len(record["text"]) > max_chars else record for record in records]


def read_inputs(source: str, text_field: str = "text", data_dir: Path | None = None,
                max_tokens: int = STUDENT_INPUT_TOKENS) -> tuple[list[dict[str, Any]], bool]:
    """Texts to decode as [{id, text}], and whether they are benchmark sentences (gold order kept).

    `source` is a review file (JSONL / CSV / TXT), a benchmark JSON file, or `task/dataset/split`. Each text is
    cut to what `max_tokens` tokens can hold as it is read (cut ones carry `cut_chars`).
    """
    from fsa_distill.benchmark.data import load_sentences, read_benchmark_file
    from fsa_distill.benchmark.importers import chars_for_tokens, read_review_corpus
    from fsa_distill.core.paths import check_input_file

    max_chars = chars_for_tokens(max_tokens)
    path = Path(source)
    if path.exists():
        check_input_file(path, "review file")
        if path.suffix.lower() == ".json":
            sentences = read_benchmark_file(path)
            return _cut([{"id": s.get("ID"), "text": s["sentence"]} for s in sentences], max_chars), True
        return read_review_corpus(path, text_field=text_field, max_chars=max_chars), False
    match = SPLIT_SPEC.match(source)
    if match:
        sentences = load_sentences(match.group(1), match.group(2), match.group(3), data_dir)
        return _cut([{"id": s.get("ID"), "text": s["sentence"]} for s in sentences], max_chars), True
    raise InputError(source, None, "input not found: give a review file (.jsonl/.csv/.txt), a benchmark .json "
                                   "file, or task/dataset/split such as atsa/rest14/test")


def predict(
    model: Annotated[Path, typer.Option(help="Student model folder (HF format).")],
    input: Annotated[str, typer.Option("--input", help="Reviews (.jsonl/.csv/.txt), benchmark .json, or "
                                                       "task/dataset/split.")],
    out: Annotated[Path, typer.Option(help='Output JSONL, one {"prediction": ...} per input, in order.')],
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per generate call.")] = 64,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Greedy decoding budget.")] = 100,
    text_field: Annotated[str, typer.Option(help="Review text field of JSONL/CSV input.")] = "text",
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder for task/dataset/split (default: "
                                                       "FSA_DATA_DIR, then the usual search).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary line only.")] = False,
) -> None:
    """Decode reviews with the student (batched, greedy) and write predictions as JSONL."""
    import json
    import time

    from fsa_distill.benchmark.importers import count_cut
    from fsa_distill.cli.inputs import benchmark_data_dir
    from fsa_distill.core.files import atomic_file
    from fsa_distill.core.paths import check_output_file
    from fsa_distill.models.student.load import check_student_dir

    with user_errors():
        check_output_file(out, "prediction file (--out)")  # before inference, which may take hours
        check_student_dir(model)
        records, is_benchmark = read_inputs(input, text_field, benchmark_data_dir(data_dir))
        if not records:
            raise InputError(input, None, "no texts to predict")
        from fsa_distill.tasks.predict import generate_predictions  # torch: only once the inputs are known good

        started = time.perf_counter()
        outputs = generate_predictions(model, [r["text"] for r in records], batch_size, max_new_tokens)
        seconds = time.perf_counter() - started
        with atomic_file(out) as handle:
            for record, output in zip(records, outputs, strict=True):
                line = {"prediction": output} if is_benchmark else {"id": record["id"], "prediction": output}
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    summary = {"model": str(model), "input": input, "out": str(out), "reviews": len(records),
               "truncated": count_cut(records),
               "seconds": round(seconds, 3), "reviews_per_s": round(len(records) / seconds, 2)}
    if as_json:
        print_json(summary)
    else:
        cut = f"; {summary['truncated']} cut to the student's {STUDENT_INPUT_TOKENS}-token input" \
            if summary["truncated"] else ""
        typer.echo(f"wrote {len(records)} predictions to {out} ({summary['reviews_per_s']} reviews/s{cut})")


def zeroshot(
    model: Annotated[Path, typer.Option(help="Student model folder (HF format).")],
    task: Annotated[Literal["atsa", "acsa"], typer.Option(help="Aspect terms or aspect categories.")],
    dataset: Annotated[str, typer.Option(help="Benchmark dataset, e.g. rest14, laptop14, rest16, laptop16.")],
    split: Annotated[Literal["train", "dev", "test", "hard_test"], typer.Option(help="Benchmark split.")] = "test",
    max_sentences: Annotated[int | None, typer.Option(min=1, help="Use the first N sentences only.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Scored sequences per forward pass.")] = 32,
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder (default: FSA_DATA_DIR, then the "
                                                       "usual search).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary line only.")] = False,
) -> None:
    """Zero-shot aspect polarity by label likelihood (no fine-tuning): accuracy and macro-F1, conflict skipped."""
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.cli.inputs import benchmark_data_dir
    from fsa_distill.models.student.load import check_student_dir

    with user_errors():
        check_student_dir(model)
        sentences = load_sentences(task, dataset, split, benchmark_data_dir(data_dir))[:max_sentences]
        from fsa_distill.tasks.zeroshot import zero_shot_eval  # torch: only once the inputs are known good

        result = zero_shot_eval(model, task, sentences, batch_size)
    summary = {"model": str(model), "task": task, "dataset": dataset, "split": split,
               "accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "n_aspects": result["n"]}
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"{task}/{dataset}/{split} zero-shot: accuracy {result['accuracy']:.4f}  "
                   f"macro-F1 {result['macro_f1']:.4f}  ({result['n']} aspects)")
