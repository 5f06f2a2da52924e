"""Shared pytest fixtures. Tests never touch the network: the benchmark comes from ../shared when present."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports Prefect or MLflow: a Prefect home of each test process's own (its ephemeral server's
# database; xdist workers inherit the controller's environment, so a home this file made is replaced, not shared),
# and no telemetry calls to the outside world, which this machine cannot reach anyway.
if os.environ.get("PREFECT_HOME", "") in ("", os.environ.get("FSA_TEST_PREFECT_HOME")):
    os.environ["PREFECT_HOME"] = os.environ["FSA_TEST_PREFECT_HOME"] = tempfile.mkdtemp(prefix="fsa-prefect-home-")
    # Registered before Prefect is imported, so it runs after Prefect's own exit handlers stop its server.
    atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], ignore_errors=True)
# Under xdist, each worker's share of the cores for torch's threads (and the processes a test starts): two workers
# of two threads each on two cores made OpenMP's spinning threads wait on each other (a flow test 56 s -> 256 s).
if (workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // workers)))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The ephemeral server gets 20 s to start by default: too little on a loaded 2-core machine.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session", autouse=True)
def _stop_prefect_server_while_output_is_open():
    """Prefect stops its temporary server from atexit and logs into pytest's closed capture streams ("Logging
    error ... I/O operation on closed file"); stopping it at session end keeps the exit quiet."""
    yield
    from fsa_distill.cli.lifecycle import stop_prefect_server

    stop_prefect_server()


@pytest.fixture(autouse=True)
def _no_tracking_uri_left_by_an_earlier_test() -> Iterator[None]:
    """`mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI (for subprocesses) and `resolve_config` reads it:
    left set, every flow run after the first in a session would log into the first run's database."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real benchmark data, teacher outputs); tests needing it skip where it is absent."""
    if not (SHARED_DIR / "fsa_datasets").is_dir():
        pytest.skip("../shared/fsa_datasets is not available")
    return SHARED_DIR


@pytest.fixture(scope="session")
def benchmark_dir(shared_dir: Path) -> Path:
    """The real benchmark folder (../shared/fsa_datasets)."""
    return shared_dir / "fsa_datasets"


# Teacher tests (models/teacher, tasks/generate): tiny Llama, converted SmolLM2, fake backends, flaky server.
from tests.serving_fixtures import talking_student_dir  # noqa: F401
from tests.student_fixtures import student_without_dropout  # noqa: F401
from tests.teacher_fixtures import flaky_server, smollm2_dir, smollm2_tokenizer_dir, tiny_llama_dir  # noqa: F401


# Student tests (models/student, tasks/corpus|pretrain|finetune|predict|zeroshot): a t5-tiny built once.
def _student_texts() -> list[tuple[str, str]]:
    """(review, response) pairs: the real Mixtral responses when ../shared has them, else synthetic ones."""
    import json

    path = SHARED_DIR / "teacher_outputs" / "mixtral_500.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        return [(row["Text"], row["mixtral_response"]) for row in rows[:120]]
    foods = ["pizza", "pasta", "service", "staff", "battery", "screen", "keyboard", "wine"]
    moods = ["great", "awful", "fine", "slow", "friendly", "bright"]
    return [(f"The {foods[i % 8]} was {moods[i % 6]}.",
             f'Opinion Target 1: "{foods[i % 8]}"\nSentiment: Positive\nReasoning: "{moods[i % 6]}" says so.')
            for i in range(120)]


@pytest.fixture(scope="session")
def student_pairs() -> list[tuple[str, str]]:
    return _student_texts()


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory: pytest.TempPathFactory, student_pairs) -> Path:
    """A randomly initialised t5-tiny with a tokenizer trained on the pairs (HF folder)."""
    from fsa_distill.models.student import build_student

    texts = [text for pair in student_pairs for text in pair]
    return build_student("t5-tiny", tmp_path_factory.mktemp("student") / "t5-tiny", texts, vocab_size=800)


@pytest.fixture(scope="session")
def tiny_generation_dir(tmp_path_factory: pytest.TempPathFactory, student_pairs) -> Path:
    """A generate-stage dataset (review_id, review, prompt, response, valid) from the pairs."""
    from datasets import Dataset

    rows = [{"review_id": f"r{i}", "review": review, "prompt": "analysis", "response": response, "valid": True}
            for i, (review, response) in enumerate(student_pairs)]
    out = tmp_path_factory.mktemp("generations") / "dataset"
    Dataset.from_list(rows).save_to_disk(str(out))
    return out


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory: pytest.TempPathFactory, tiny_generation_dir: Path) -> Path:
    from fsa_distill.core.config import CorpusConfig
    from fsa_distill.tasks.stages.corpus import build_corpus

    out = tmp_path_factory.mktemp("corpus") / "corpus"
    build_corpus([tiny_generation_dir], out, CorpusConfig(dev_fraction=0.1))
    return out


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (a stable sort): with `make test`'s two workers, the quick modules then fill the end of the
    run instead of one long module running alone on one worker while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
