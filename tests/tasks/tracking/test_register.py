"""The gated registry: challenger on every run, champion only when mean F1 does not drop."""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fsa_distill.models.student import build_student
from fsa_distill.tasks.tracking.register import gate_champion, register_student, registry_lock


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = ["the food was great", "service was slow and rude", "nice screen, bad battery"] * 40
    return build_student("t5-tiny", tmp_path_factory.mktemp("student") / "model", texts, 300)


@pytest.fixture()
def registry(tmp_path: Path) -> tuple[MlflowClient, str, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("gate", artifact_location=(tmp_path / "artifacts").as_uri())
    return client, uri, experiment


def _register(registry, model_dir: Path, digest: str, f1: float) -> dict:
    client, uri, experiment = registry
    run_id = client.create_run(experiment).info.run_id
    return {**register_student(model_dir, digest, f1, run_id, "student", uri), "run_id": run_id}


def test_gate_rule() -> None:
    assert gate_champion(0.1, None)
    assert gate_champion(0.5, 0.5)
    assert not gate_champion(0.49, 0.5)


def test_registration_waits_for_a_concurrent_one(registry, tiny_student: Path) -> None:
    """The gate reads then writes the champion alias: a second registration must not interleave with it."""
    client, uri, _ = registry
    results: list[dict] = []
    with registry_lock(uri, "student"):  # a concurrent registration is in progress
        worker = threading.Thread(target=lambda: results.append(_register(registry, tiny_student, "digest-w", 0.3)))
        worker.start()
        worker.join(timeout=5)
        assert worker.is_alive() and not results, "registration went ahead while another one held the registry"
        assert client.search_registered_models() == [], "the registry was touched while locked"
    worker.join(timeout=120)
    assert results and results[0]["champion"]


def test_champion_moves_only_up_and_decision_is_recorded(registry, tiny_student: Path) -> None:
    client = registry[0]
    first = _register(registry, tiny_student, "digest-a", 0.50)
    assert first["champion"] and first["decision"] == "promoted"

    worse = _register(registry, tiny_student, "digest-b", 0.40)
    assert not worse["champion"]
    assert client.get_model_version_by_alias("student", "champion").version == int(first["model_version"])
    assert client.get_model_version_by_alias("student", "challenger").version == int(worse["model_version"])
    run = client.get_run(worse["run_id"])
    assert run.data.tags["gate.decision"] == "kept_champion"
    assert run.data.metrics["gate.new_mean_f1"] == pytest.approx(0.40)
    assert run.data.metrics["gate.champion_mean_f1"] == pytest.approx(0.50)
    version_tags = client.get_model_version("student", worse["model_version"]).tags
    assert version_tags["gate_decision"] == "kept_champion"
    assert float(version_tags["gate.new_mean_f1"]) == pytest.approx(0.40)
    assert float(version_tags["gate.champion_mean_f1"]) == pytest.approx(0.50)
    assert version_tags["gate.champion_version_before"] == first["model_version"]
    assert worse["champion_run_id_before"] == first["run_id"]  # the run whose predictions the report rescores

    better = _register(registry, tiny_student, "digest-c", 0.55)
    assert better["champion"]
    assert client.get_model_version_by_alias("student", "champion").version == int(better["model_version"])

    again = _register(registry, tiny_student, "digest-c", 0.55)
    assert again["reused_version"] and again["model_version"] == better["model_version"]
    assert len(client.search_model_versions("name='student'")) == 3


def _config_module_file() -> str:
    from fsa_distill.core import config

    return config.__file__


def test_registered_champion_serves_in_process_and_leaves_fsa_distill_whole(registry, tiny_student: Path) -> None:
    """Loaded in-process, the champion predicts; its code folder goes first on sys.path (spawned processes inherit
    it) and holds its modules under `fsa_distill_serving`, so the installed `fsa_distill` stays whole here and in
    children. (With a partial `fsa_distill` there, the child's import of fsa_distill.core.config failed.)"""
    import multiprocessing

    import fsa_distill

    _register(registry, tiny_student, "digest-a", 0.5)
    mlflow.set_tracking_uri(registry[1])
    before = list(sys.path)
    model = mlflow.pyfunc.load_model("models:/student@champion")
    predictions = model.predict(pd.DataFrame({"text": ["the food was great", "bad battery"]}), params={"max_new_tokens": 4})
    assert len(predictions) == 2 and all(isinstance(answer["raw"], str) for answer in predictions)
    assert all(isinstance(answer["targets"], list) for answer in predictions)
    assert model.metadata.get_input_schema().input_names() == ["text"]
    assert model.metadata.get_output_schema().input_names() == ["raw", "targets"]
    # The child starts with this sys.path. An executor, not a Pool: a worker that dies importing is an error
    # (BrokenProcessPool) rather than a Pool respawning it forever.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        child_config = pool.submit(_config_module_file).result(timeout=300)
    assert Path(child_config).parent.parent == Path(fsa_distill.__file__).parent
    added = [Path(entry) for entry in sys.path if entry not in before]
    assert added and all((entry / "fsa_distill_serving").is_dir() for entry in added), added
    assert not any((entry / "fsa_distill").exists() for entry in added)


@pytest.mark.parametrize("name", ["it's", 'say "hi"', "x' OR name LIKE '%"])
def test_model_names_with_quotes_find_only_their_own_versions(registry, name: str) -> None:
    """Issue #23: the version search filter is quoted, and a name cannot widen it to another model's versions."""
    from fsa_distill.tasks.tracking.register import _find_version_by_digest

    client = registry[0]
    for model in ("other", name):
        client.create_registered_model(model)
        client.create_model_version(model, source="file:///nowhere", tags={"model_digest": "same"})
    found = _find_version_by_digest(client, name, "same")
    assert found is not None and found.name == name
    assert _find_version_by_digest(client, name, "different") is None


def test_registry_locks_live_in_a_private_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsa_distill.core.errors import InputError
    from fsa_distill.core.paths import private_lock_dir

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    lock = registry_lock("sqlite:///x.db", "student")
    assert Path(lock.lock_file).parent == tmp_path / "run" / "fsa-distill-locks"
    assert (tmp_path / "run" / "fsa-distill-locks").stat().st_mode & 0o777 == 0o700
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run2").mkdir()
    (tmp_path / "run2" / "fsa-distill-locks").symlink_to(tmp_path / "elsewhere")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run2"))
    with pytest.raises(InputError, match="lock folder is a link"):
        private_lock_dir()
