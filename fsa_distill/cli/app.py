"""The `fsa-distill` command line. Each command lives in fsa_distill/cli/commands/<name>.py and keeps heavy
imports (torch, vllm, mlflow) inside the function so `fsa-distill --help` stays fast."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from fsa_distill.cli.commands import (
    bench,
    cache,
    config,
    data,
    finetune,
    generate,
    history,
    predict,
    pretrain,
    run,
    score,
    serve,
    study,
)

# The ephemeral Prefect server's telemetry ping logs an ERROR on every offline run; set the variable to opt in.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect's temporary server gets 20 s to start, migrations included: too little on a busy laptop.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Flow runs send a heartbeat every 30 s (Prefect's default: 180); on the servers of `make servers`, deploy.sh's
# automation marks a run Crashed after three missed ones (deployments/zombie_automation.py).
os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
# vLLM logs to stdout by default (its engine processes too); stdout carries only `--json` results.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")

# add_completion: typer's --install-completion / --show-completion (bash, zsh, fish, PowerShell).
app = typer.Typer(no_args_is_help=True, add_completion=True, help=__doc__.split("\n")[0])
data_app = typer.Typer(no_args_is_help=True, help="Benchmark data: convert user data into the benchmark schema.")
bench_app = typer.Typer(no_args_is_help=True, help="Performance benchmarks; each prints one JSON line.")
app.add_typer(data_app, name="data")
cache_app = typer.Typer(no_args_is_help=True, help="The teacher answer store: bring answers produced elsewhere, move answers between stores.")
app.add_typer(bench_app, name="bench")
config_app = typer.Typer(no_args_is_help=True, help="The resolved config, every key with its description.")
app.add_typer(config_app, name="config")
app.add_typer(cache_app, name="cache")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"fsa-distill {version('fsa-distill')}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the installed version and exit.")] = False,
) -> None:
    pass


data_app.command("convert")(data.convert)
app.command("score")(score.score)
app.command("generate")(generate.generate)
app.command("pretrain")(pretrain.pretrain)
app.command("finetune")(finetune.finetune)
app.command("predict")(predict.predict)
app.command("zeroshot")(predict.zeroshot)
app.command("serve")(serve.serve)
app.command("run")(run.run)
app.command("study")(study.study)
app.command("history")(history.history)
cache_app.command("import")(cache.import_answers)
cache_app.command("export")(cache.export_answers)
bench_app.command("scorer")(bench.scorer)
bench_app.command("teacher")(bench.teacher)
bench_app.command("structured")(bench.structured)
bench_app.command("stream")(bench.stream)
bench_app.command("quality")(bench.quality)
bench_app.command("train")(bench.train)
bench_app.command("scale")(bench.scale)
bench_app.command("serve")(bench.serve)
bench_app.command("history")(bench.history)
config_app.command("show")(config.show)


if __name__ == "__main__":
    app()
