"""`fsa-distill data convert`: SemEval ABSA XML → the benchmark JSON schema (../shared/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from fsa_distill.cli.console import print_json, stderr, user_errors
from fsa_distill.cli.options import JsonSummary
from fsa_distill.core.files import write_json_atomically
from fsa_distill.core.paths import check_input_file, check_output_file


def convert(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="SemEval-2014 or 2015/2016 ABSA XML file.")],
    task: Annotated[Literal["atsa", "acsa"], typer.Option(help="Keep aspect terms (atsa) or categories (acsa).")],
    out: Annotated[Path, typer.Option(help="Benchmark JSON file to write.")],
    as_json: JsonSummary = False,
) -> None:
    """Convert SemEval ABSA XML into benchmark JSON; --json prints {"sentences", "aspects", "skipped",
    "skipped_items"}.

    Sentences without an aspect for the task are kept with no aspects, as in the benchmark; implicit (NULL)
    targets cannot be ATSA aspects and are listed as skipped."""
    from fsa_distill.benchmark.importers import convert_semeval_xml

    with user_errors():
        check_input_file(input_path, "XML file")
        check_output_file(out)
        sentences, skipped = convert_semeval_xml(input_path, task)
        write_json_atomically(out, sentences)
    for item in skipped:
        stderr.print(f"skipped {item['id']}: {item['reason']}", highlight=False, markup=False)
    summary = {
        "sentences": len(sentences),
        "aspects": sum(len(sentence["aspects"]) for sentence in sentences),
        "skipped": len(skipped),
        "skipped_items": skipped,
    }
    if as_json:
        print_json(summary)
        return
    typer.echo(f"wrote {summary['sentences']} sentences with {summary['aspects']} {task} aspects to {out}"
               f" ({summary['skipped']} skipped)")
