"""Register the student in the MLflow model registry behind a quality gate.

Every run's model becomes the `challenger`; `champion` moves only when the new model's mean F1 is at least the
current champion's. The decision and both numbers are recorded on the run and as tags on the model version
(`gate_decision`, `gate.new_mean_f1`, `gate.champion_mean_f1`, `gate.champion_version_before`); when @champion
moves to another version, the run announces it (tasks/tracking/messages.py: a webhook message, where set up). The model is
logged (a pyfunc over the HF folder and its CTranslate2 export, models/serving.py, carrying a copy of the
fsa_distill modules it imports, as `fsa_distill_serving`, and its pinned requirements) before a version is
created, so a tracking outage leaves no half-registered version behind; re-registering the same weights (same
digest) reuses the existing version. The MLflow registry
has no compare-and-set, so registrations of one model are serialised by a machine-wide file lock: two runs
finishing together cannot both read "no champion" and leave the worse model holding the alias.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fsa_distill.core.digests import sha256_text
from fsa_distill.core.paths import private_lock_dir
from fsa_distill.tasks.tracking.messages import announce_champion

CHALLENGER = "challenger"
CHAMPION = "champion"


def registry_lock(tracking_uri: str, model_name: str, timeout_s: float = 600.0) -> FileLock:
    """One registration per (tracking store, model) at a time for this user on this machine (runs on other hosts:
    see docs); the lock lives in the user's private lock folder, not the shared temp dir."""
    return FileLock(private_lock_dir() / f"registry-{sha256_text(f'{tracking_uri}|{model_name}')[:16]}.lock", timeout=timeout_s)


def name_filter(name: str) -> str:
    """An MLflow `name = ...` filter for `name`, quoted. MLflow has no quoting function and does not unescape
    (it strips the outer quotes), so the quote is one the name does not contain."""
    for quote in ("'", '"'):
        if quote not in name:
            return f"name = {quote}{name}{quote}"
    raise ValueError(f"registry.model_name {name!r}: a name cannot hold both kinds of quote")


def _find_version_by_digest(client: MlflowClient, name: str, model_digest: str) -> Any | None:
    for model_version in client.search_model_versions(name_filter(name)):
        if model_version.name == name and model_version.tags.get("model_digest") == model_digest:  # only ours
            return model_version
    return None


def _current_champion(client: MlflowClient, name: str) -> Any | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


EXAMPLE_REVIEW = "The pizza was great but the waiter was rude."
# What the served model imports (models/serving.py and the fsa_distill modules it reaches), pinned to the versions
# installed when it is logged. torch loses its local label (+cpu, +cu128): the serving host picks its own build.
SERVING_REQUIREMENTS = ("mlflow", "pandas", "numpy", "torch", "transformers", "tokenizers", "sentencepiece",
                        "ctranslate2", "tqdm")


def pinned_requirements() -> list[str]:
    return [f"{name}=={version(name).split('+')[0] if name == 'torch' else version(name)}"
            for name in SERVING_REQUIREMENTS]


def _fsa_imports(path: Path) -> set[str]:
    """The fsa_distill modules a source file imports, at top level or inside functions (`from P import m` names
    both P and, when it is a module, P.m)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names
                         if _is_module(f"{node.module}.{alias.name}"))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "fsa_distill" or name.startswith("fsa_distill.")}


def _is_module(name: str) -> bool:
    if not name.startswith("fsa_distill."):
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent is a module, not a package: `name` is an attribute
        return False


# The name the served model's copy of the fsa_distill modules it imports goes under (see serving_code).
SERVING_PACKAGE = "fsa_distill_serving"
_FSA_IMPORT = re.compile(r"^(\s*(?:from|import)\s+)fsa_distill(?=[.\s])", re.MULTILINE)


def serving_code(out_dir: Path) -> Path:
    """`out_dir/fsa_distill_serving`: the modules models/serving.py reaches (and their packages' __init__ files),
    for the model's `code_paths`, so the model loads where fsa-distill is not installed.

    Under a package name of their own, with their `fsa_distill` imports renamed: loading a model puts its code
    folder first on sys.path (spawned processes inherit that), and a partial `fsa_distill` there would shadow the
    installed package for the rest of the process and its children. Only these few modules, not the whole
    package: the model stays small and needs only its serving requirements. Walked with `ast` rather than
    `modulefinder`, which would follow every import into torch and transformers."""
    seen: set[str] = set()
    pending = ["fsa_distill.models.serving"]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # a module's packages run their __init__ first
            module = ".".join(parts[:depth])
            if module in seen:
                continue
            seen.add(module)
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                raise RuntimeError(f"cannot find {module}, which the served model imports")
            source = Path(spec.origin)
            target = out_dir.joinpath(SERVING_PACKAGE, *module.split(".")[1:])
            target = target / "__init__.py" if spec.submodule_search_locations is not None else target.with_suffix(".py")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_FSA_IMPORT.sub(rf"\g<1>{SERVING_PACKAGE}", source.read_text(encoding="utf-8")),
                              encoding="utf-8")
            if _fsa_imports(target):  # e.g. `import fsa_distill.x` used as `fsa_distill.x.f()`: rename by hand
                raise RuntimeError(f"{source}: an fsa_distill import the served copy could not rename")
            pending.extend(_fsa_imports(source))
    return out_dir / SERVING_PACKAGE


@contextmanager
def _importable(code: Path) -> Iterator[None]:
    """MLflow runs the model's code file while logging it, without its `code_paths` on sys.path: the served copy
    is importable for that while only, and leaves nothing behind in sys.path or sys.modules."""
    sys.path.insert(0, str(code.parent))
    try:
        yield
    finally:
        sys.path.remove(str(code.parent))
        for name in [name for name in sys.modules if name.split(".")[0] == SERVING_PACKAGE]:
            del sys.modules[name]


def log_student_model(model_dir: Path, run_id: str, tracking_uri: str, task: str = "atsa",
                      engine: str = "torch") -> str:
    """Log the student folder and its CTranslate2 export as a pyfunc model (models/serving.py) on `run_id`,
    with a signature and an input example; `engine` is the one it serves with. Returns the model URI."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    from fsa_distill.core.answers import check_task, structured_answer
    from fsa_distill.models import serving
    from fsa_distill.models.student.engines import ENGINES, default_quantization, export_ct2

    check_task(task)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose from {list(ENGINES)}")
    mlflow.set_tracking_uri(tracking_uri)
    example = pd.DataFrame({"text": [EXAMPLE_REVIEW]})
    answer = structured_answer("pizza | positive ; waiter | negative", task, EXAMPLE_REVIEW)
    signature = infer_signature(example, [answer], params={"max_new_tokens": 100, "batch_size": 32})
    quantization = default_quantization()
    with tempfile.TemporaryDirectory(prefix="fsa-register-") as temp, mlflow.start_run(run_id=run_id):
        ct2_dir = export_ct2(model_dir, Path(temp) / f"ct2-{quantization}", quantization)
        code = serving_code(Path(temp) / "code")
        with _importable(code):
            info = mlflow.pyfunc.log_model(
                name="student",
                python_model=str(code / "models" / "serving.py"),  # the copy that imports fsa_distill_serving
                artifacts={serving.HF_ARTIFACT: str(model_dir), serving.CT2_ARTIFACT: str(ct2_dir)},
                model_config={"task": task, "engine": engine, "ct2_quantization": quantization},
                signature=signature,
                input_example=example,
                code_paths=[str(code)],
                pip_requirements=pinned_requirements(),
            )
    return info.model_uri


def gate_champion(new_f1: float, champion_f1: float | None) -> bool:
    """The promotion rule: no champion yet, or the challenger is at least as good."""
    return champion_f1 is None or new_f1 >= champion_f1


def register_student(
    model_dir: Path,
    model_digest: str,
    mean_f1: float,
    run_id: str,
    model_name: str,
    tracking_uri: str,
    task: str = "atsa",
    engine: str = "torch",
) -> dict[str, Any]:
    """Log + register (or reuse) the model version, set `challenger`, and apply the `champion` gate.
    `task`: what the model was fine-tuned for (its answers name aspects or categories); `engine`: the one the
    served model decodes with (student.engine)."""
    with registry_lock(tracking_uri, model_name):
        return _register_unlocked(model_dir, model_digest, mean_f1, run_id, model_name, tracking_uri, task, engine)


def _register_unlocked(
    model_dir: Path, model_digest: str, mean_f1: float, run_id: str, model_name: str, tracking_uri: str,
    task: str, engine: str,
) -> dict[str, Any]:
    client = MlflowClient(tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        try:
            client.create_registered_model(model_name, description="fsa-distill student (T5, ATSA/ACSA)")
        except MlflowException:  # created meanwhile by a concurrent flow run
            client.get_registered_model(model_name)

    version = _find_version_by_digest(client, model_name, model_digest)
    reused = version is not None
    if version is None:
        model_uri = log_student_model(model_dir, run_id, tracking_uri, task, engine)
        version = client.create_model_version(
            model_name,
            source=model_uri,
            run_id=run_id,
            tags={"model_digest": model_digest, "mean_f1": f"{mean_f1:.6f}"},
            # An MLflow tracking *server* rejects a models:/ source without the logged model's id.
            model_id=model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else None,
        )
    client.set_registered_model_alias(model_name, CHALLENGER, version.version)

    champion = _current_champion(client, model_name)
    champion_f1 = float(champion.tags["mean_f1"]) if champion and "mean_f1" in champion.tags else None
    promoted = gate_champion(mean_f1, champion_f1)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version.version)
    decision = "promoted" if promoted else "kept_champion"
    version_tags = {"gate_decision": decision, "gate.new_mean_f1": f"{mean_f1:.6f}",
                    "gate.champion_mean_f1": f"{champion_f1:.6f}" if champion_f1 is not None else "none",
                    "gate.champion_version_before": champion.version if champion else "none"}
    for key, value in version_tags.items():
        client.set_model_version_tag(model_name, version.version, key, str(value))
    for key, value in {
        "gate.decision": decision,
        "gate.champion_version_before": champion.version if champion else "none",
        "registered_model": f"{model_name}/{version.version}",
    }.items():
        client.set_tag(run_id, key, value)
    client.log_metric(run_id, "gate.new_mean_f1", mean_f1)
    if champion_f1 is not None:
        client.log_metric(run_id, "gate.champion_mean_f1", champion_f1)
    if promoted and (champion is None or str(champion.version) != str(version.version)):
        announce_champion(model_name, str(version.version), mean_f1, str(champion.version) if champion else None,
                          champion_f1, run_id, client.get_run(run_id).info.experiment_id)
    return {
        "model_name": model_name,
        "model_version": str(version.version),
        "reused_version": reused,
        "champion": promoted,
        "champion_f1_before": champion_f1,
        "champion_version_before": str(champion.version) if champion else None,
        "champion_run_id_before": champion.run_id if champion else None,
        "decision": decision,
    }
