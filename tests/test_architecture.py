"""The shape of the code: one installed namespace, and imports that point one way only.

The layer contract lives in pyproject.toml ([tool.importlinter]) and is checked with import-linter. Its graph
builder walks the root package's own folder, and our design-card folders (flows/, tasks/, models/, benchmark/)
are mapped into `fsa_distill` by setuptools' package-dir instead of living inside it, so the test lays out the
installed view of the package as symlinks first and points import-linter there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def installed_view(tmp_path: Path, root: Path = ROOT) -> Path:
    """A folder where `fsa_distill/` looks as it does installed: its own files plus the mapped sub-packages."""
    package_dirs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    view = tmp_path / "view" / "fsa_distill"
    view.mkdir(parents=True)
    for entry in (root / "fsa_distill").iterdir():
        if entry.name != "__pycache__":
            (view / entry.name).symlink_to(entry)
    for package, folder in package_dirs.items():
        if package != "fsa_distill":
            (view / package.split(".")[-1]).symlink_to(root / folder)
    return view.parent


def lint_imports(tmp_path: Path, root: Path = ROOT) -> subprocess.CompletedProcess[str]:
    view = installed_view(tmp_path, root)
    config = root / "pyproject.toml"
    env = {**os.environ, "PYTHONPATH": str(view)}
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache", "--no-logo", "--config", str(config)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)


def test_imports_point_one_way(tmp_path: Path) -> None:
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "upward", "reported"), [
    ("fsa_distill/core/digests.py", "from fsa_distill.flows import distill",
     "fsa_distill.core.digests -> fsa_distill.flows"),
    ("tasks/store/answer_files.py", "from fsa_distill.tasks.tracking import cost",
     "fsa_distill.tasks.store.answer_files -> fsa_distill.tasks.tracking"),
])
def test_the_layer_contracts_catch_an_upward_import(tmp_path: Path, module: str, upward: str,
                                                    reported: str) -> None:
    """The contracts can fail: a copy of the tree where core imports a flow, or the answer store imports
    tracking, breaks them."""
    copy = tmp_path / "copy"
    for name in ("fsa_distill", "flows", "tasks", "models", "benchmark"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    source = copy / module
    source.write_text(source.read_text() + f"\n{upward}  # noqa\n")
    result = lint_imports(tmp_path / "lint", copy)
    assert result.returncode != 0
    assert reported in result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, venv): the wheel built once, installed into a fresh venv outside the repository. The venv sees the
    project venv's site-packages through a plain path line in a .pth file: the dependencies are reused, and the
    .pth files in there (the editable install's finder among them) are not run, so only the wheel's fsa_distill
    is importable."""
    tmp_path = tmp_path_factory.mktemp("installed")
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(ROOT)], check=True, timeout=300, cwd=tmp_path)
    (wheel,) = wheel_dir.glob("fsa_distill-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    (site_packages,) = venv.glob("lib/python3*/site-packages")
    project_site = next(path for path in sys.path if path.endswith("site-packages") and Path(path).is_dir())
    (site_packages / "project-dependencies.pth").write_text(project_site + "\n")
    return wheel, venv


@pytest.mark.slow
def test_only_the_fsa_distill_namespace_is_installed(installed: tuple[Path, Path], tmp_path: Path) -> None:
    """Built and installed into a fresh virtual environment, nothing generic is importable at top level."""
    wheel, venv = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"fsa_distill", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "fsa_distill/tasks/stages/stage_task.py" in names
    assert "fsa_distill/benchmark/fsa_f1/fsa_f1.py" in names
    probe = ("import importlib, fsa_distill\n"
             "for name in ('tasks', 'models', 'benchmark', 'flows'):\n"
             "    try:\n        importlib.import_module(name)\n    except ImportError:\n        continue\n"
             "    raise SystemExit(f'{name} is importable at top level')\n"
             "print(fsa_distill.__file__)")
    result = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                            cwd=tmp_path, env={"PATH": os.environ["PATH"]}, check=False)
    assert result.returncode == 0, result.stderr
    assert str(venv) in result.stdout


@pytest.mark.slow
def test_the_installed_wheel_runs_from_another_folder(installed: tuple[Path, Path], tmp_path: Path,
                                                      benchmark_dir: Path) -> None:
    """Everything read at run time ships in the wheel: from a folder with no checkout around it, the installed
    command prints its version, resolves a packaged profile and runs the tiny flow (imported answers: the
    packaged prompts key them, the packaged checksums and metric script check and score the benchmark)."""
    from tests.flows.test_flow import tiny_overrides, with_imported_answers

    wheel, venv = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", FSA_DATA_DIR=str(benchmark_dir), PYTHONUNBUFFERED="1")
    command = str(venv / "bin" / "fsa-distill")

    def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([command, *args], check=False, cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=timeout)

    version = cli("--version")
    assert version.returncode == 0 and version.stdout == f"fsa-distill {wheel.name.split('-')[1]}\n", version
    shown = cli("config", "show", "--profile", "demo", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["profile"] == "demo"

    # The deployments' entrypoints are module paths: they load from the installed package too.
    entrypoints = [deployment["entrypoint"] for deployment in
                   yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())["deployments"]]
    load = ("import sys\nfrom prefect.flows import load_flow_from_entrypoint\n"
            "print(' '.join(load_flow_from_entrypoint(e, use_placeholder_flow=False).name for e in sys.argv[1:]))")
    loaded = subprocess.run([str(venv / "bin" / "python"), "-c", load, *entrypoints], check=False, cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split() == ["distill", "retrain-on-new-corpus", "benchmark", "distill"]

    overrides = with_imported_answers(tiny_overrides(tmp_path / "work", Path("unused")))
    overrides += ["pretrain.max_steps=2", "pretrain.checkpoint_every=2", "pretrain.eval_every=2",
                  "data.max_test_sentences=8", "evaluate.zero_shot=false"]
    run = cli("run", "--json", *[arg for override in overrides for arg in ("--set", override)], timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(summary["stages"].values()) == {"ran"} and 0.0 <= summary["mean_f1"] <= 1.0
    assert list(elsewhere.iterdir()) == []  # every output went to the configured work dir
