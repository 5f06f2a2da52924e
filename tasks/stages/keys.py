"""Stage cache keys: the one function that decides whether a stage's earlier result still holds.

A stage's key is the digest of
- its settings: the typed slice of the config its body receives (`StageSettings`), the whole of it, so nothing
  the body can read is left out of the key, and nothing it cannot read is in it;
- content that settings name (`StageSettings.content`, e.g. the prompt templates' digests);
- its upstream results, by their content digest;
- its code: its stage module and every `fsa_distill` module that module imports, transitively, wherever an import
  statement sits, plus the data files those modules name beside them (prompts/, fsa_f1/). Each module counts by its
  syntax tree without imports, docstrings and the stage task's decorator, so moving an import, rewording a
  docstring or changing a timeout re-runs nothing, while changing a helper a stage runs re-runs that stage.

Nobody keeps a list: the flows (through the Prefect cache policy in tasks/stages/stage_task.py), the CLI's
single-stage commands and the rank launcher all call `stage_key`. Nothing here imports Prefect.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic_core import to_jsonable_python

from fsa_distill.core.config import DistillConfig, TrackingConfig, TrainConfig, mlflow_uri
from fsa_distill.core.digests import sha256_file, sha256_json, sha256_text

PACKAGE = "fsa_distill"
TASK_DECORATORS = frozenset({"task"})  # Prefect's: retries and timeouts do not change what a stage computes


class StageSettings(BaseModel):
    """The slice of the config one stage's body receives, and all of its cache key's config part."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def content(self) -> Any:
        """Digests of files that settings values name (a prompt folder, a held-out file); None when none."""
        return None


class Placement(BaseModel):
    """Where a stage's outputs and live metrics go, and how many processes compute them: never part of a key
    (N data-parallel processes reduce the loss to what one computes). Stage bodies never receive it whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    work_dir: Path
    tracking: TrackingConfig
    train: TrainConfig

    @classmethod
    def of(cls, config: DistillConfig) -> Placement:
        return cls(work_dir=config.work_dir, tracking=config.tracking, train=config.train)

    @property
    def mlflow_uri(self) -> str:
        return mlflow_uri(self.tracking, self.work_dir)


# ------------------------------------------------------------------------------------------------ code


def _module_file(name: str) -> Path | None:
    """The source file of a module (a package's __init__.py), or None when `name` is not a module."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # `from module import function` names a function, not a module
        return None
    return Path(spec.origin) if spec is not None and spec.origin not in (None, "built-in", "frozen") else None


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Dotted names of the fsa_distill modules (or names inside them) that the tree's imports import."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from package import module`
    return {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}


class _CodeOnly(ast.NodeTransformer):
    """What a module computes: its tree without imports (they enter as closure members), docstrings, and the
    stage task's decorator."""

    def visit_Import(self, node: ast.AST) -> None:
        return None

    visit_ImportFrom = visit_Import

    def generic_visit(self, node: ast.AST) -> ast.AST:
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:]  # type: ignore[attr-defined]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.decorator_list = [d for d in node.decorator_list if _decorator_name(d) not in TASK_DECORATORS]
        return super().generic_visit(node)


def _decorator_name(decorator: ast.expr) -> str:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")


@functools.lru_cache(maxsize=1024)
def _parsed(path: Path, module: str, mtime_ns: int, size: int) -> tuple[frozenset[str], frozenset[str], str]:
    """(fsa_distill imports, string constants, code digest) of one source file, cached per file version."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    imports = _imported_names(tree, module, path.name == "__init__.py")
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    code = sha256_text(ast.dump(_CodeOnly().visit(tree)))
    return frozenset(imports), frozenset(constants), code


def _file_facts(path: Path, module: str) -> tuple[frozenset[str], frozenset[str], str]:
    stat = path.stat()
    return _parsed(path, module, stat.st_mtime_ns, stat.st_size)


def _resources(module_dir: Path, constants: Iterable[str]) -> list[Path]:
    """Files beside a module that its source names by a plain string ("prompts", "fsa_f1", "checksums.json"):
    data the module loads by path rather than by import, such as prompt templates or the metric script."""
    found: list[Path] = []
    for name in constants:
        if not name or "/" in name or "\\" in name or name in {".", ".."} or len(name) > 100:
            continue
        candidate = module_dir / name
        if candidate.is_file():
            found.append(candidate)
        elif candidate.is_dir() and not (candidate / "__init__.py").exists():
            found.extend(p for p in candidate.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return found


def _parents(module: str) -> list[str]:
    """A module's enclosing packages: importing it runs their __init__.py first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_closure(roots: Iterable[str]) -> dict[str, Path]:
    """Every fsa_distill module the roots import, directly or through each other: dotted name → file."""
    found: dict[str, Path] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        path = _module_file(name)
        if path is None:  # a function or class imported from a module: the module itself is queued too
            continue
        found[name] = path
        imports, _, _ = _file_facts(path, name)
        pending.extend(imports | set(_parents(name)))
    return found


def code_digest(module: str) -> str:
    """Digest of the code a stage runs: its module and every fsa_distill module it imports, transitively, each
    by what it computes (imports, docstrings and the task decorator aside), with the data files they name."""
    parts: dict[str, str] = {}
    for name, path in sorted(module_closure([module]).items()):
        _, constants, parts[name] = _file_facts(path, name)
        for resource in _resources(path.parent, constants):
            parts[f"{name}:{resource.relative_to(path.parent).as_posix()}"] = sha256_file(resource)
    return sha256_json(parts)


# ---------------------------------------------------------------------------------------------- the key


def _digest_of(value: Any) -> Any:
    """Upstream results enter a key through their content digest only (never timings or paths)."""
    if isinstance(value, BaseModel) and hasattr(value, "digest"):
        return value.digest
    if isinstance(value, dict) and "digest" in value:
        return value["digest"]
    if isinstance(value, (list, tuple)):
        return [_digest_of(item) for item in value]
    return to_jsonable_python(value)


def stage_key(stage: str, module: str, settings: StageSettings, **inputs: Any) -> str:
    """The cache key of one stage run: `stage` (its name), `module` (its stage module's dotted name), the
    settings its body receives and its upstream inputs."""
    return sha256_json(
        {
            "stage": stage,
            "inputs": {name: _digest_of(value) for name, value in sorted(inputs.items())},
            "settings": settings.model_dump(mode="json"),
            "content": settings.content(),
            "code": code_digest(module),
        }
    )
