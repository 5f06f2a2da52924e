"""Stage cache keys, and the Prefect task options every stage shares.

Each stage declares what it depends on beside its task in tasks/stages/prefect_tasks.py (a `StageSpec`), and `stage_key` is the
one function that turns that declaration into the stage's key. The key is the digest of
- the stage's upstream results, by their content digest (the task's parameters, config aside);
- the config it reads: the sections or dotted keys it declares (`reads`, e.g. "finetune", "evaluate.views");
- content that config values name, when it declares some (`content`, e.g. the prompt templates' digests);
- its code: the task function and every `fsa_distill` module it imports, followed transitively with `ast`
  (imports inside functions included), plus the data files those modules name beside them (prompts/, fsa_f1/).
  Nobody keeps a list, so changing a helper a stage imports re-runs that stage.

Prefect's default cache policy includes the flow-run id, so a later run would recompute everything. Instead
`StageCachePolicy` makes that key the Prefect cache key, and the task body reads the same key back
(`current_stage_key`) to name its output folder and to let the stage function decide whether it already
finished there. So:
- an identical later run is served from the cache;
- a changed prompt, config value or helper invalidates that stage and, because its output digest changes,
  exactly the stages downstream of it;
- a killed stage never completed, so the next run re-enters it with the same key and the same output folder,
  where the stage resumes from whatever it had written.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.transactions import get_transaction
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_file, sha256_json, sha256_text

PACKAGE = "fsa_distill"
# Task parameters that are not upstream inputs: the config enters through `reads`, and the MLflow run that
# receives live metrics changes where metrics go, never what is computed.
NOT_INPUTS = frozenset({"config", "tracking_run_id"})
# Config keys that only say where things go (output folders, tracking servers) or how many processes compute
# them (`train`: N data-parallel processes reduce the loss to what one process computes): never part of a key.
PLACEMENT = ("work_dir", "tracking", "train")


@dataclass(frozen=True)
class StageSpec:
    """What a stage depends on besides its upstream results and its code (which is found, not declared)."""

    name: str
    reads: tuple[str, ...]  # config sections or dotted keys the stage reads, e.g. ("data", "evaluate.views")
    content: Callable[[DistillConfig], Any] | None = None  # digests of files that config values name


# ------------------------------------------------------------------------------------------------ code


def _module_file(name: str) -> Path | None:
    """The source file of a module (a package's __init__.py), or None when `name` is not a module."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # `from module import function` names a function, not a module
        return None
    return Path(spec.origin) if spec is not None and spec.origin not in (None, "built-in", "frozen") else None


def _imported_names(nodes: Iterable[ast.AST], module: str, is_package: bool) -> set[str]:
    """Dotted names of the fsa_distill modules (or names inside them) that these import statements import."""
    names: set[str] = set()
    for node in nodes:
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


def _import_nodes(tree: ast.AST) -> list[ast.AST]:
    return [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


@functools.lru_cache(maxsize=1024)
def _parsed(path: Path, module: str, mtime_ns: int, size: int) -> tuple[frozenset[str], frozenset[str]]:
    """(fsa_distill imports, string constants) of one source file; cached per file version (parsing is the cost)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    imports = _imported_names(_import_nodes(tree), module, path.name == "__init__.py")
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    return frozenset(imports), frozenset(constants)


def _file_facts(path: Path, module: str) -> tuple[frozenset[str], frozenset[str]]:
    stat = path.stat()
    return _parsed(path, module, stat.st_mtime_ns, stat.st_size)


def _resources(module_dir: Path, constants: set[str]) -> list[Path]:
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
        imports, _ = _file_facts(path, name)
        pending.extend(imports | set(_parents(name)))
    return found


def code_digest(function: Callable[..., Any]) -> str:
    """Digest of the code a stage runs: its function (decorators and comments aside) and every fsa_distill
    module that function or its module's top level imports, transitively, with the data files they name."""
    module_name = function.__module__
    module_file = Path(inspect.getfile(function))
    function_tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    definition = function_tree.body[0]
    assert isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef))
    definition.decorator_list = []  # the task's timeout or retries do not change what it computes
    module_tree = ast.parse(module_file.read_bytes())
    top_level_imports = [node for node in module_tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    roots = _imported_names(_import_nodes(function_tree) + top_level_imports, module_name, False)
    parts: dict[str, str] = {f"{module_name}.{function.__name__}": sha256_text(ast.unparse(definition))}
    for name, path in sorted(module_closure(roots).items()):
        parts[name] = sha256_file(path)
        _, constants = _file_facts(path, name)
        for resource in _resources(path.parent, constants):
            parts[f"{name}:{resource.relative_to(path.parent).as_posix()}"] = sha256_file(resource)
    return sha256_json(parts)


# ---------------------------------------------------------------------------------------------- the key


def config_value(config: DistillConfig, path: str) -> Any:
    """The JSON value of a section or dotted key (`"finetune"`, `"evaluate.views"`) of the config."""
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else to_jsonable_python(value)


def _digest_of(value: Any) -> Any:
    """Upstream results enter a key through their content digest only (never timings or paths)."""
    if isinstance(value, BaseModel) and hasattr(value, "digest"):
        return value.digest
    if isinstance(value, dict) and "digest" in value:
        return value["digest"]
    if isinstance(value, (list, tuple)):
        return [_digest_of(item) for item in value]
    return to_jsonable_python(value)


def stage_key(spec: StageSpec, function: Callable[..., Any], config: DistillConfig, **inputs: Any) -> str:
    """The cache key of one stage: the one place that decides whether a stage's earlier result still holds."""
    return sha256_json(
        {
            "stage": spec.name,
            "inputs": {name: _digest_of(value) for name, value in sorted(inputs.items()) if name not in NOT_INPUTS},
            "config": {path: config_value(config, path) for path in spec.reads},
            "content": spec.content(config) if spec.content is not None else None,
            "code": code_digest(function),
        }
    )


@dataclass
class StageCachePolicy(CachePolicy):
    """Prefect cache policy of a stage task: its `stage_key`, computed from the task's own parameters."""

    spec: StageSpec = field(kw_only=True)  # keyword only: the base class's first field is `key_storage`

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str:
        return f"{self.spec.name}-{stage_key(self.spec, task_ctx.task.fn, **inputs)}"


def current_stage_key() -> str:
    """Inside a stage task: the key `StageCachePolicy` computed for this run (without the stage-name prefix).

    Read back rather than recomputed, so the output folder and the stage's own "already done" check use the
    very key Prefect caches under. Prefect logs and swallows an error in a cache policy (and then does not
    cache); failing here makes that loud instead.
    """
    transaction = get_transaction()
    if transaction is None or not transaction.key:
        raise RuntimeError("no stage key for this task run: its cache policy failed (see the log above)")
    return transaction.key.rsplit("-", 1)[1]  # stage names may hold a dash; the digest never does


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    httpx.TransportError,
    OSError,
)


def retry_only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry connection/timeouts and I/O hiccups, never bad input or code bugs."""
    from prefect.task_engine import TaskRunTimeoutError  # a TimeoutError, but the stage's own deadline

    from fsa_distill.core.config import ConfigError
    from fsa_distill.core.errors import InputError

    try:
        state.result()
    except (InputError, ConfigError, FileNotFoundError, PermissionError, TaskRunTimeoutError):
        return False  # a stage that ran out its timeout would only run it out again
    except TRANSIENT_ERRORS:
        return True
    except Exception:  # noqa: BLE001 - any other failure is a bug or bad data: retrying cannot help
        return False
    return False


STAGE_TASK_OPTIONS: dict[str, Any] = {
    "persist_result": True,
    "result_serializer": "json",
    "cache_expiration": timedelta(days=365),
    "retries": 2,
    "retry_delay_seconds": [10, 60],
    "retry_condition_fn": retry_only_transient,
}
