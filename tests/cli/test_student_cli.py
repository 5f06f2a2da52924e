"""`fsa-distill pretrain` and `fsa-distill finetune`: one stage from a resolved config, with no Prefect server or
flow run and no MLflow (the stage module defines its Prefect task, so Prefect itself is imported)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from fsa_distill.cli.app import app

PRETRAIN_SETTINGS = ["--set", "pretrain.max_steps=2", "--set", "pretrain.batch_size=4", "--set",
                     "pretrain.max_source_length=32", "--set", "pretrain.max_target_length=48", "--set",
                     "pretrain.checkpoint_every=1", "--set", "pretrain.eval_every=1"]


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_pretrain_command_runs_the_stage_without_a_prefect_server_or_mlflow_and_resumes(
    tmp_path: Path, tiny_student_dir: Path, tiny_corpus_dir: Path
) -> None:
    out = tmp_path / "pretrain"
    args = ["pretrain", "--student", str(tiny_student_dir), "--corpus", str(tiny_corpus_dir), "--out", str(out),
            *PRETRAIN_SETTINGS, "--json"]
    # In a fresh interpreter, so that what the command imports is all that is loaded.
    script = ("import json, sys\nfrom fsa_distill.cli.app import app\n"
              "try:\n    app(sys.argv[1:])\nexcept SystemExit as done:\n    assert not done.code, done.code\n"
              "from prefect.context import FlowRunContext\n"
              "loaded = [m for m in ('prefect.server', 'prefect.server.api', 'mlflow') if m in sys.modules]\n"
              "print(json.dumps(sorted(loaded + (['a flow run'] if FlowRunContext.get() else []))))\n")
    ran = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=900,
                         check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary_line, loaded_line = ran.stdout.strip().splitlines()[-2:]
    assert json.loads(loaded_line) == [], "the single-stage path started Prefect's server or a flow, or MLflow"
    summary = json.loads(summary_line)
    assert summary["steps"] == 2 and summary["resumed_from_step"] == 0
    assert summary["model_dir"] == str(out / "model") and (out / "model" / "config.json").exists()

    # Resumable like the stage: without its final model, a rerun continues from the last checkpoint.
    shutil.rmtree(out / "model")
    (out / "pretrain_result.json").unlink()
    resumed = CliRunner().invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    again = _summary(resumed.stdout)
    assert again["resumed_from_step"] == 2 and again["final_train_loss"] == summary["final_train_loss"]


def test_pretrain_command_reports_bad_input_as_one_error_line(tmp_path: Path, tiny_student_dir: Path,
                                                             tiny_corpus_dir: Path) -> None:
    runner = CliRunner()
    base = ["pretrain", "--student", str(tiny_student_dir), "--corpus", str(tiny_corpus_dir), "--out",
            str(tmp_path / "out")]
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder", encoding="utf-8")
    cases = {
        "corpus folder not found": ["--corpus", str(tmp_path / "missing")],
        "model folder not found": ["--student", str(tmp_path / "no-student")],
        "unknown key": ["--set", "pretrain.max_stepz=2"],
        # --out is checked before the student loads (a file, or a place under a file).
        "output folder is a file, not a directory": ["--out", str(a_file)],
        "cannot create the output folder": ["--out", str(a_file / "out")],
    }
    for message, change in cases.items():
        result = runner.invoke(app, base + change)
        assert result.exit_code == 2, (message, result.output)
        assert result.stderr.startswith("error:") and message in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_finetune_command_runs_one_dataset_and_seed(tmp_path: Path, tiny_student_dir: Path,
                                                   benchmark_dir: Path) -> None:
    out = tmp_path / "finetune"
    args = ["finetune", "--model", str(tiny_student_dir), "--dataset", "atsa/rest14", "--seed", "3", "--out",
            str(out), "--data-dir", str(benchmark_dir), "--set", "data.max_train_sentences=8", "--set",
            "data.max_dev_sentences=4", "--set", "data.max_test_sentences=4", "--set", "finetune.epochs=1",
            "--set", "finetune.max_new_tokens=8", "--json"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = _summary(first.stdout)
    assert (summary["task"], summary["dataset"], summary["seed"], summary["n_test"]) == ("atsa", "rest14", 3, 4)
    assert set(summary["scores"]) == {"normal", "implicit", "multi"} and Path(summary["model_dir"]).is_dir()
    assert len(Path(summary["predictions_path"]).read_text(encoding="utf-8").splitlines()) == 4
    assert _summary(runner.invoke(app, args).stdout) == summary  # finished: the rerun returns the same result

    bad = runner.invoke(app, ["finetune", "--model", str(tiny_student_dir), "--dataset", "rest14", "--out",
                              str(tmp_path / "bad")])
    assert bad.exit_code == 2 and bad.stderr.startswith("error:") and "task/dataset" in bad.stderr, bad.output
    missing = runner.invoke(app, ["finetune", "--model", str(tiny_student_dir), "--dataset", "atsa/nosuch",
                                  "--data-dir", str(benchmark_dir), "--out", str(tmp_path / "bad")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error:"), missing.output
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder", encoding="utf-8")
    unwritable = runner.invoke(app, ["finetune", "--model", str(tiny_student_dir), "--dataset", "atsa/rest14",
                                     "--data-dir", str(benchmark_dir), "--out", str(a_file / "out")])
    assert unwritable.exit_code == 2 and unwritable.stderr.startswith("error:"), unwritable.output
    assert "cannot create the output folder" in unwritable.stderr and "Traceback" not in unwritable.output
