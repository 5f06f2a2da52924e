"""Config resolution: profiles, files, overrides, environment, and clear errors before any work starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fsa_distill.core.config import ConfigError, resolve_config


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
        ("teacher.backend=ollama", "teacher.backend"),
        ("nonsense", "expected key=value"),
    ],
)
def test_bad_values_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config("demo", overrides=[override], environ={})


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
