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
        # Blank and null texts kept: one output line per input record (the engine answers "" for them).
        return read_review_corpus(path, text_field=text_field, max_chars=max_chars, keep_blank=True), False
    match = SPLIT_SPEC.match(source)
    if match:
        sentences = load_sentences(match.group(1), match.group(2), match.group(3), data_dir)
        return _cut([{"id": s.get("ID"), "text": s["sentence"]} for s in sentences], max_chars), True
    raise InputError(source, None, "input not found: give a review file (.jsonl/.csv/.txt), a benchmark .json "
                                   "file, or task/dataset/split such as atsa/rest14/test")


def _default_engine() -> str:
    from fsa_distill.core.config import StudentConfig

    return StudentConfig.model_fields["engine"].default


def _output_line(record: dict[str, Any], output: str, is_benchmark: bool, output_format: str, task: str
                 ) -> dict[str, Any]:
    """One output line: `{"prediction": raw}` (raw) or `{"raw", "targets"}` (structured, the served model's
    answer); review files also carry the review's id."""
    from fsa_distill.core.answers import structured_answer

    line = ({"prediction": output} if output_format == "raw"
            else structured_answer(output, task, record["text"]))
    return line if is_benchmark else {"id": record["id"], **line}


def predict(
    model: Annotated[Path, typer.Option(help="Student model folder (HF format).")],
    input: Annotated[str, typer.Option("--input", help="Reviews (.jsonl/.csv/.txt), benchmark .json, or "
                                                       "task/dataset/split; with --ray: .jsonl or .parquet.")],
    out: Annotated[Path, typer.Option(help='Output JSONL, one line per input, in order.')],
    engine: Annotated[Literal["torch", "ctranslate2"] | None, typer.Option(
        help="Inference engine (default: student.engine's default).")] = None,
    output_format: Annotated[Literal["raw", "structured"], typer.Option(
        "--format", help='raw: {"prediction": "<output>"}; structured: {"raw", "targets": [{"aspect" | '
                         '"category", "polarity"}]}, parsed with the scorer\'s rules.')] = "raw",
    task: Annotated[Literal["atsa", "acsa"] | None, typer.Option(
        help="What the student was fine-tuned for (structured targets name aspects or categories); "
             "default: the split's task, else atsa.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per generate call.")] = 64,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Greedy decoding budget.")] = 100,
    text_field: Annotated[str, typer.Option(help="Review text field of JSONL/CSV/Parquet input.")] = "text",
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder for task/dataset/split (default: "
                                                       "FSA_DATA_DIR, then the usual search).")] = None,
    use_ray: Annotated[bool, typer.Option("--ray", help="Ray Data over student replicas: embedded local Ray, "
                                                        "or the cluster at RAY_ADDRESS; resumable.")] = False,
    replicas: Annotated[int | None, typer.Option(min=1, help="--ray: student replicas (default: one per CPU "
                                                             "of the cluster).")] = None,
    shard_size: Annotated[int, typer.Option(min=1, help="--ray: rows per committed output shard (the unit of "
                                                        "resuming).")] = 10_000,
    num_cpus: Annotated[int | None, typer.Option(min=1, help="--ray: CPUs of the embedded Ray (default: all "
                                                             "cores).")] = None,
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

    engine = engine or _default_engine()
    with user_errors():
        check_output_file(out, "prediction file (--out)")  # before inference, which may take hours
        check_student_dir(model)
        if use_ray:
            summary = _predict_with_ray(model, Path(input), out, engine, output_format, task or "atsa", batch_size,
                                        max_new_tokens, text_field, replicas, shard_size, num_cpus)
            records = None
        else:
            records, is_benchmark = read_inputs(input, text_field, benchmark_data_dir(data_dir))
            if not records:
                raise InputError(input, None, "no texts to predict")
            match = SPLIT_SPEC.match(input)
            task = task or (match.group(1) if match else "atsa")
            from fsa_distill.tasks.ops.predict import (
                generate_predictions,  # torch: once the inputs are known good
            )

            started = time.perf_counter()
            outputs = generate_predictions(model, [r["text"] for r in records], batch_size, max_new_tokens, engine)
            seconds = time.perf_counter() - started
            with atomic_file(out) as handle:
                for record, output in zip(records, outputs, strict=True):
                    line = _output_line(record, output, is_benchmark, output_format, task)
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            summary = {"reviews": len(records), "truncated": count_cut(records), "seconds": round(seconds, 3),
                       "reviews_per_s": round(len(records) / seconds, 2)}
    summary = {"model": str(model), "input": input, "out": str(out), "engine": engine, "format": output_format,
               **summary}
    if as_json:
        print_json(summary)
    else:
        cut = f"; {summary['truncated']} cut to the student's {STUDENT_INPUT_TOKENS}-token input" \
            if summary.get("truncated") else ""
        typer.echo(f"wrote {summary['reviews']} predictions to {out} ({engine}, {summary['reviews_per_s']} "
                   f"reviews/s{cut})")


def _predict_with_ray(model: Path, input_path: Path, out: Path, engine: str, output_format: str, task: str,
                      batch_size: int, max_new_tokens: int, text_field: str, replicas: int | None,
                      shard_size: int, num_cpus: int | None) -> dict[str, Any]:
    import time

    from fsa_distill.core.paths import check_input_file

    if not (input_path.is_dir() and any(input_path.glob("*.parquet"))):
        check_input_file(input_path, "review file")
        if input_path.suffix.lower() not in (".jsonl", ".parquet"):
            raise InputError(input_path, None, "--ray reads JSON lines (.jsonl) or Parquet (.parquet)")
    from fsa_distill.tasks.ops.batch_predict import (
        predict_with_ray,  # Ray: only once the inputs are known good
    )

    started = time.perf_counter()
    result = predict_with_ray(model, input_path, out, engine, batch_size, max_new_tokens, shard_size, replicas,
                              text_field, output_format, task, num_cpus)
    seconds = time.perf_counter() - started
    return {"reviews": result["rows"], "shards": result["shards"], "shards_resumed": result["shards_resumed"],
            "seconds": round(seconds, 3), "reviews_per_s": round(result["rows"] / seconds, 2)}


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
        from fsa_distill.tasks.stages.zeroshot import (
            zero_shot_eval,  # torch: only once the inputs are known good
        )

        result = zero_shot_eval(model, task, sentences, batch_size)
    summary = {"model": str(model), "task": task, "dataset": dataset, "split": split,
               "accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "n_aspects": result["n"]}
    if as_json:
        print_json(summary)
    else:
        typer.echo(f"{task}/{dataset}/{split} zero-shot: accuracy {result['accuracy']:.4f}  "
                   f"macro-F1 {result['macro_f1']:.4f}  ({result['n']} aspects)")
