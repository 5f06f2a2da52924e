"""`fsa-distill generate`: teacher answers for a review corpus (validated, cached per answer)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from fsa_distill.cli.console import print_json, stderr, user_errors

SUMMARY_KEYS = ("reviews", "generated", "cached", "rejected", "tokens", "tokens_per_s")


def generate(
    corpus: Annotated[list[Path], typer.Option("--corpus", help="Review file (JSONL / CSV / TXT); repeatable.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: accepted answers, rejected/ inside.")],
    prompts: Annotated[str | None, typer.Option(help="Comma-separated prompts, e.g. analysis,rewrite.")] = None,
    teacher: Annotated[str | None, typer.Option(help="smollm2-135m-instruct, a hub id or a folder.")] = None,
    backend: Annotated[str | None, typer.Option(help="vllm, openai or hf.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (openai backend).")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="New tokens per answer.")] = None,
    max_reviews: Annotated[int | None, typer.Option(help="Only the first N reviews.")] = None,
    text_field: Annotated[str, typer.Option(help="Review text field in JSONL / CSV.")] = "text",
    profile: Annotated[str, typer.Option(help="Config profile: demo, study, paper.")] = "demo",
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML merged over the profile.")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="e.g. generation.batch_size=32.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON line of stats.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="vLLM's logs on the terminal too; otherwise they go "
                                                           "to <work_dir>/logs/engines.log.")] = False,
) -> None:
    """Ask the teacher every prompt for every review; rerunning only generates what is not cached."""
    with user_errors():
        from pydantic import ValidationError

        from fsa_distill.benchmark.importers import chars_for_tokens
        from fsa_distill.cli.inputs import check_config_paths
        from fsa_distill.core.config import ConfigError, resolve_config
        from fsa_distill.core.paths import check_input_file, check_output_dir

        flags = {
            "generation.prompts": [n.strip() for n in prompts.split(",") if n.strip()] if prompts else None,
            "teacher.model": teacher,
            "teacher.backend": backend,
            "teacher.base_url": base_url,
            "generation.max_new_tokens": max_tokens,
        }
        if config_file is not None:
            check_input_file(config_file, "config file")
        for path in corpus:
            check_input_file(path, "review file")
        check_output_dir(out)
        config = resolve_config(profile, config_file, overrides or [])
        for dotted, value in flags.items():
            if value is not None:
                section, key = dotted.split(".")
                try:
                    setattr(getattr(config, section), key, value)
                except ValidationError as error:
                    raise ConfigError(f"--{key.replace('_', '-')}: {error.errors()[0]['msg']}") from None
        check_config_paths(config)
        max_chars = chars_for_tokens(config.generation.max_input_tokens)
        # A bad line ends the command with one error line at once: one streamed pass that holds nothing checks the
        # whole corpus before the teacher's tokenizer loads (a GGUF teacher takes ~30 s to convert).
        for _ in itertools.islice(_read_counting_cuts(corpus, text_field, max_chars, Counter()), max_reviews):
            pass
        counts: Counter[str] = Counter()
        # streamed: the generate stage plans jobs lazily and never holds the corpus
        reviews = itertools.islice(_read_counting_cuts(corpus, text_field, max_chars, counts), max_reviews)
        from fsa_distill.cli.lifecycle import engine_logs, start_reaper

        start_reaper()  # vLLM's engine processes end with this process
        with engine_logs(config.work_dir, verbose):  # before vLLM is imported
            from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

            stats = generate_responses(reviews, GenerateSettings.of(config), out, progress=not json_output,
                                       work_dir=config.work_dir)
        stats["cut_while_reading"] = counts["cut"]
    if json_output:
        print_json(stats)
        return
    for key in (*SUMMARY_KEYS, "cut_while_reading", "cache_hit_rate", "rejected_by_reason", "dataset_dir",
                "rejected_dir"):
        value = stats[key]
        stderr.print(f"{key:>18}: {value:.3g}" if isinstance(value, float) else f"{key:>18}: {value}",
                     highlight=False, markup=False)


def _read_counting_cuts(corpus: list[Path], text_field: str, max_chars: int, counts: Counter[str]
                        ) -> Iterator[dict[str, Any]]:
    from fsa_distill.benchmark.importers import iter_review_corpus

    for path in corpus:
        for review in iter_review_corpus(path, text_field=text_field, max_chars=max_chars):
            counts["cut"] += "cut_chars" in review
            yield review
