"""Stage cache keys and the Prefect task options every stage shares.

Prefect's default cache policy includes the flow-run id, so a later run would recompute everything. Instead the
flow computes one explicit key per stage from content digests (upstream outputs, the config sections the stage
reads, the source code of the modules it runs) and the tasks use that key as their Prefect cache key, so:
- an identical later run is served from the cache;
- a changed prompt or config section invalidates that stage and, because its output digest changes, exactly
  the stages downstream of it;
- a killed stage never completed, so the next run re-enters it with the same key and the same output folder,
  where the stage resumes from whatever it had written.
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from prefect.context import TaskRunContext

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_file, sha256_json

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def code_digest(*modules: str) -> str:
    """Digest of the source files of the named modules or packages (e.g. "fsa_distill.tasks.pretrain", "fsa_distill.models.student")."""
    files: list[Path] = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None and not spec.submodule_search_locations:
            raise ValueError(f"cannot find module {name!r} for the code digest")
        if spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                files.extend(sorted(Path(location).rglob("*")))
        else:
            files.append(Path(spec.origin))
    relevant = [path for path in files if path.is_file() and path.suffix in {".py", ".txt", ".json", ".yaml"}]
    return sha256_json({str(path.relative_to(PROJECT_ROOT)): sha256_file(path) for path in relevant})


def _digest_of(value: Any) -> Any:
    """Upstream stage results enter a key through their content digest only (never timings or paths)."""
    if isinstance(value, dict) and "digest" in value:
        return value["digest"]
    if isinstance(value, (list, tuple)):
        return [_digest_of(item) for item in value]
    return value


def stage_key(
    stage: str,
    config: DistillConfig,
    sections: tuple[str, ...],
    code: tuple[str, ...],
    **inputs: Any,
) -> str:
    """The cache key of one stage: its name, upstream digests, the config it reads and its code."""
    return sha256_json(
        {
            "stage": stage,
            "inputs": {name: _digest_of(value) for name, value in sorted(inputs.items())},
            "config": config.digest(*sections),
            "code": code_digest(*code),
        }
    )


def key_from_parameters(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """Prefect cache_key_fn: the explicit `stage_key` parameter every stage task takes."""
    return f"{context.task.name}-{parameters['stage_key']}"


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    httpx.TransportError,
    OSError,
)


def retry_only_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry connection/timeouts and I/O hiccups, never bad input or code bugs."""
    from fsa_distill.core.config import ConfigError
    from fsa_distill.core.errors import InputError

    try:
        state.result()
    except (InputError, ConfigError, FileNotFoundError, PermissionError):
        return False
    except TRANSIENT_ERRORS:
        return True
    except Exception:  # noqa: BLE001 - any other failure is a bug or bad data: retrying cannot help
        return False
    return False


STAGE_TASK_OPTIONS: dict[str, Any] = {
    "cache_key_fn": key_from_parameters,
    "persist_result": True,
    "result_serializer": "json",
    "cache_expiration": timedelta(days=365),
    "retries": 2,
    "retry_delay_seconds": [10, 60],
    "retry_condition_fn": retry_only_transient,
}
