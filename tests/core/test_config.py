"""Config resolution: profiles, files, overrides, environment, and clear errors before any work starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fsa_distill.core import config as config_module
from fsa_distill.core.config import ConfigError, config_keys, resolve_config


def test_every_profile_resolves() -> None:
    for profile in ("demo", "study", "paper"):
        config = resolve_config(profile, environ={})
        assert config.profile == profile
    assert resolve_config("paper", environ={}).student.model == "google-t5/t5-base"


def test_overrides_and_file_merge(tmp_path: Path) -> None:
    config_file = tmp_path / "mine.yaml"
    config_file.write_text("finetune:\n  epochs: 7\nteacher:\n  backend: hf\n")
    config = resolve_config("demo", config_file, ["finetune.seeds=[1, 2]", "pretrain.enabled=false"], environ={})
    assert config.finetune.epochs == 7
    assert config.finetune.seeds == [1, 2]
    assert config.teacher.backend == "hf"
    assert config.pretrain.enabled is False


def test_environment_is_honoured_but_explicit_values_win(tmp_path: Path) -> None:
    environ = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999", "FSA_DATA_DIR": str(tmp_path)}
    config = resolve_config("demo", environ=environ)
    assert config.mlflow_uri == "http://127.0.0.1:5999"
    assert config.data.data_dir == tmp_path
    config = resolve_config("demo", overrides=["tracking.mlflow_tracking_uri=sqlite:///x.db"], environ=environ)
    assert config.mlflow_uri == "sqlite:///x.db"


def test_default_tracking_is_sqlite_in_work_dir(tmp_path: Path) -> None:
    config = resolve_config("demo", overrides=[f"work_dir={tmp_path}"], environ={})
    assert config.mlflow_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("finetune.epoch=3", "finetune.epoch: unknown key"),
        ("finetune.epochs=three", "finetune.epochs"),
        ("data.datasets=[atsa/rest15]", "unknown dataset"),
        ("finetune.auxiliary_datasets=[acsa/rest15]", r"finetune\.auxiliary_datasets.*unknown dataset"),
        ("student.model=minilm-l6-d9", (r"student\.model: unknown student 'minilm-l6-d9': use one of "
                                        r"\['minilm-l6', 'minilm-l6-d3', 't5-tiny', 't5-mini', 't5-small'\].*"
                                        r"did you mean minilm-l6-d3")),
        ("teacher.backend=ollama", "teacher.backend"),
        ("nonsense", "expected key=value"),
    ],
)
def test_bad_values_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config("demo", overrides=[override], environ={})


def test_student_names_hub_ids_and_folders_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #23: only a bare name is checked against the known ones; what the build loads (a hub id, a folder,
    relative or absolute) is checked when it is loaded."""
    from fsa_distill.models.student.build import SIZES
    from fsa_distill.models.student.warm_start import PRETRAINED

    assert set(config_module.STUDENT_NAMES) == set(PRETRAINED) | set(SIZES)
    (tmp_path / "my-student").mkdir()
    monkeypatch.chdir(tmp_path)
    for spec in (*config_module.STUDENT_NAMES, "google-t5/t5-base", "my-student", str(tmp_path / "my-student"),
                 "./not-yet-built", "~/students/x"):
        assert resolve_config("demo", overrides=[f"student.model={spec}"], environ={}).student.model == spec


def test_unknown_profile_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile"):
        resolve_config("huge", environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config("demo", tmp_path / "missing.yaml", environ={})


def test_cli_rejects_a_wrong_key_before_any_work(tmp_path: Path) -> None:
    """Exit code 2 with the key named, and no work dir, MLflow db or Prefect run created."""
    work_dir = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, "-m", "fsa_distill.cli", "run", "--set", f"work_dir={work_dir}", "--set", "pretrain.stepz=5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "pretrain.stepz: unknown key" in result.stderr
    assert not work_dir.exists()


# ------------------------------------------------------------------ a config that documents itself (#10 item 7)

def test_every_key_has_a_description() -> None:
    keys = config_keys()
    assert {"pretrain", "pretrain.max_steps", "finetune.seeds", "work_dir"} <= set(keys)
    assert [key for key, description in keys.items() if not description.strip()] == []


@pytest.mark.parametrize(
    ("layer", "key", "suggestion"),
    [
        ("--set", "pretrain.stepz", "did you mean pretrain.max_steps?"),
        ("--set", "pretrain.epochs", "did you mean finetune.epochs?"),
        ("file", "finetune.epoch", "did you mean finetune.epochs?"),
        ("file", "pretrian.max_steps", "did you mean pretrain?"),
        ("profile", "teacher.modle", "did you mean teacher.model or student.model?"),
    ],
)
def test_unknown_keys_get_the_nearest_valid_ones(layer: str, key: str, suggestion: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    section, name = key.split(".")
    overrides, config_file, origin = [], None, "--set"
    if layer == "--set":
        overrides = [f"{key}=3"]
    elif layer == "file":
        config_file = tmp_path / "mine.yaml"
        config_file.write_text(f"{section}:\n  {name}: 3\n")
        origin = str(config_file)
    else:  # a profile with a typo in it
        profile_dir = tmp_path / "profiles"
        profile_dir.mkdir()
        (profile_dir / "demo.yaml").write_text(f"{section}:\n  {name}: x\n")
        monkeypatch.setattr(config_module, "PROFILE_DIR", profile_dir)
        origin = "profile demo"
    unknown = section if section == "pretrian" else key
    with pytest.raises(ConfigError) as raised:
        resolve_config("demo", config_file, overrides, environ={})
    assert str(raised.value) == f"invalid config: {unknown}: unknown key (from {origin}" + (
        " (demo.yaml)" if layer == "profile" else "") + f"); {suggestion}"


def test_unknown_profile_is_answered_with_the_nearest() -> None:
    with pytest.raises(ConfigError, match="did you mean study"):
        resolve_config("stduy", environ={})


def test_a_profile_file_path_is_a_profile(tmp_path: Path) -> None:
    """--profile takes a path to a profile file as well as a name; a missing one is named as such."""
    mine = tmp_path / "mine.yaml"
    mine.write_text((config_module.PROFILE_DIR / "study.yaml").read_text().replace("seeds: [42, 52, 62]", "seeds: [7]"))
    config = resolve_config(str(mine), environ={})
    assert config.profile == str(mine) and config.finetune.seeds == [7]
    assert config.model_dump(exclude={"profile", "finetune"}) == resolve_config("study", environ={}).model_dump(
        exclude={"profile", "finetune"})
    with pytest.raises(ConfigError, match=f"{tmp_path / 'gone.yaml'}: config file not found"):
        resolve_config(str(tmp_path / "gone.yaml"), environ={})


def test_profile_completion_offers_known_profiles_then_yaml_files(tmp_path: Path, monkeypatch) -> None:
    from fsa_distill.cli.options import complete_profile

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "prod.yaml").write_text("{}")
    (tmp_path / "paperwork.txt").write_text("")
    (tmp_path / "pa.yml").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert complete_profile("") == ["demo", "study", "paper", "pa.yml", "profiles"]
    assert complete_profile("pa") == ["paper", "pa.yml"]
    assert complete_profile("profiles/") == ["profiles/prod.yaml"]


def test_version_and_completion_options(tmp_path: Path) -> None:
    from importlib.metadata import version

    from typer.testing import CliRunner

    from fsa_distill.cli.app import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"fsa-distill {version('fsa-distill')}\n"
    result = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout



def test_python_dash_m_fsa_distill_runs_the_command_line(tmp_path: Path) -> None:
    """`python -m fsa_distill` (the guess when the venv's bin/ is not on PATH) is the CLI, from any folder."""
    from importlib.metadata import version

    result = subprocess.run([sys.executable, "-m", "fsa_distill", "--version"], cwd=tmp_path, check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == f"fsa-distill {version('fsa-distill')}\n", result.stderr

def test_config_show_prints_every_key_with_its_description_as_a_usable_config(tmp_path: Path) -> None:
    """The YAML carries every description as a comment and, read back as --config, gives the same config."""
    from fsa_distill.cli.commands.config import comment, commented_yaml

    config = resolve_config("study", overrides=["finetune.seeds=[1, 2]", "teacher.revision='1.0'"], environ={})
    text = commented_yaml(config)
    for description in config_keys().values():
        assert f"{comment(description)}\n" in text
    shown = tmp_path / "shown.yaml"
    shown.write_text(text)
    assert resolve_config("study", shown, environ={}) == config
    assert resolve_config("demo", shown, environ={}).model_dump(exclude={"profile"}) == config.model_dump(
        exclude={"profile"})


def test_config_show_cli_resolves_profile_file_and_overrides(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fsa_distill.cli.app import app

    config_file = tmp_path / "mine.yaml"
    config_file.write_text("finetune:\n  epochs: 7\n")
    args = ["config", "show", "--profile", "paper", "--config", str(config_file), "--set", "pretrain.max_steps=9"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown == resolve_config("paper", config_file, ["pretrain.max_steps=9"]).model_dump(mode="json")
    assert (shown["profile"], shown["finetune"]["epochs"], shown["pretrain"]["max_steps"]) == ("paper", 7, 9)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "# Optimizer steps\n  max_steps: 9\n" in result.stdout


# ------------------------------------------------------------------------- bounds and clean errors (#15 item 1)

@pytest.mark.parametrize(
    "override",
    [
        "pretrain.max_steps=-5", "pretrain.max_steps=0", "pretrain.batch_size=0", "pretrain.eval_every=0",
        "pretrain.learning_rate=0", "pretrain.min_learning_rate=-1e-5", "pretrain.max_source_length=0",
        "finetune.learning_rate=-3e-4", "finetune.epochs=-1", "finetune.eval_batch_size=0", "finetune.seeds=[]",
        "finetune.seeds=[42, -1]", "corpus.dev_fraction=1.5", "corpus.dev_fraction=-0.1", "corpus.seed=-1",
        "teacher.gpu_memory_utilization=0", "teacher.max_model_len=0", "generation.top_p=1.5",
        "generation.batch_size=0", "data.max_test_sentences=0", "evaluate.teacher_max_sentences=0",
        "student.vocab_size=10", "generation.prompts=[]",
    ],
)
def test_numbers_out_of_range_are_refused(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^invalid config: {re.escape(key)}(\.\d+)?: "):
        resolve_config("demo", overrides=[override], environ={})


@pytest.mark.parametrize(
    "override",
    ["finetune.epochs=0", "pretrain.max_grad_norm=0", "corpus.dev_fraction=0", "pretrain.min_learning_rate=0",
     "teacher.gpu_memory_utilization=1", "generation.temperature=0", "teacher.max_retries=0"],
)
def test_edge_values_that_mean_something_are_accepted(override: str) -> None:
    key, value = override.split("=")
    section, name = key.split(".")
    assert getattr(getattr(resolve_config("demo", overrides=[override], environ={}), section), name) == float(value)


def test_a_floor_above_the_peak_learning_rate_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"pretrain.min_learning_rate: is above learning_rate \(0.0001\)"):
        resolve_config("demo", overrides=["pretrain.min_learning_rate=0.01"], environ={})


def test_views_without_normal_are_refused() -> None:
    with pytest.raises(ConfigError, match="evaluate.views: must include 'normal'"):
        resolve_config("demo", overrides=["evaluate.views=[implicit, multi]"], environ={})


def test_several_problems_give_one_line_each() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_config("demo", overrides=["pretrain.max_steps=-5", "finetune.epoch=2", "corpus.dev_fraction=2"],
                       environ={})
    header, *problems = str(raised.value).splitlines()
    assert header == "invalid config (3 problems):"
    assert [line.split(":")[0].strip() for line in problems] == [
        "corpus.dev_fraction", "pretrain.max_steps", "finetune.epoch"]


def test_broken_yaml_in_set_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_config("demo", overrides=["finetune.seeds=[1, 2"], environ={})
    assert str(raised.value).startswith("--set 'finetune.seeds=[1, 2': value is not valid YAML: line 1, column")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"finetune:\n  epochs: 3\n  # caf\xe9\n", r"line 3: not UTF-8 text \(byte 0xe9\)"),
        (b"finetune:\n  epochs: [3\n", r"not valid YAML: line 3, column 1: expected ',' or ']'"),
        (b"- a list\n", "top level must be a mapping"),
    ],
)
def test_unreadable_config_files_are_config_errors(tmp_path: Path, content: bytes, message: str) -> None:
    config_file = tmp_path / "mine.yaml"
    config_file.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(config_file))}: {message}") as raised:
        resolve_config("demo", config_file, environ={})
    assert "\n" not in str(raised.value)


def test_a_folder_as_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        resolve_config("demo", tmp_path, environ={})


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--set", "pretrain.max_steps=-5"], "pretrain.max_steps: Input should be greater than or equal to 1"),
        (["--set", "finetune.seeds=[1, 2"], "value is not valid YAML"),
        (["--config", "{latin1}"], "not UTF-8 text"),
        (["--set", "student.model=minilm-l6-d9"], "student.model: unknown student 'minilm-l6-d9': use one of ["),
    ],
)
def test_cli_bad_config_is_one_error_line_exit_2_no_work(tmp_path: Path, args: list[str], problem: str) -> None:
    """`run` with a bad config: exit 2, exactly one `error:` line (however narrow the terminal), no traceback,
    and no work dir created."""
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("# caf\xe9\n".encode("latin-1"))
    work_dir = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, "-m", "fsa_distill.cli", "run", "--set", f"work_dir={work_dir}",
         *[arg.format(latin1=latin1) for arg in args]],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "COLUMNS": "40"},
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr
    assert not work_dir.exists()


def test_registry_gate_metric_is_gone() -> None:
    """It was accepted and never read; the gate compares the flow's one metric (mean normal-view F1)."""
    with pytest.raises(ConfigError, match="registry.gate_metric: unknown key"):
        resolve_config("demo", overrides=["registry.gate_metric=mean_f1"], environ={})


def test_bare_on_and_off_are_words_for_the_bf16_switches() -> None:
    """YAML reads `off` as false; `--set finetune.bf16=off` must still mean "off" (bench train --part dtype sets it)."""
    config = resolve_config("demo", overrides=["finetune.bf16=off", "pretrain.bf16=on"], environ={})
    assert (config.finetune.bf16, config.pretrain.bf16) == ("off", "on")
    with pytest.raises(ConfigError, match="finetune.bf16"):
        resolve_config("demo", overrides=["finetune.bf16=maybe"], environ={})
