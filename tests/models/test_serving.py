"""The served champion answers real HTTP requests with structured answers, and refuses bad ones with a 4xx.

The champion is registered in a temporary MLflow (SQLite); the server is started as users start it, with
`fsa-distill serve` (MLflow's own scoring app, what `mlflow models serve` runs, behind the request guard), as a
subprocess in its own process group, polled on /ping until healthy, and its whole group is stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow.tracking import MlflowClient

from fsa_distill.core.config import DistillConfig
from fsa_distill.models.serving import MAX_BATCH_SIZE, MAX_NEW_TOKENS, MAX_TEXT_CHARS, MAX_TEXTS
from fsa_distill.models.serving_guard import MAX_BODY_BYTES, MAX_JSON_DEPTH
from fsa_distill.perf.bench_serve_http import drive, engine_speed, served_model
from fsa_distill.tasks.tracking.register import register_student
from tests.serving_fixtures import TAUGHT_ATSA

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 300  # model load + uvicorn start on a loaded 2-core machine
CHAMPION_URI = "models:/student@champion"


@pytest.fixture(scope="module")
def registered_champion(tmp_path_factory: pytest.TempPathFactory, talking_student_dir: Path) -> tuple[str, Path]:
    """(tracking URI, its folder): the talking student registered as `student@champion` in a temporary MLflow."""
    tmp = tmp_path_factory.mktemp("serving")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("serving", artifact_location=(tmp / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    engine = DistillConfig().student.engine  # serve what users get by default
    registration = register_student(talking_student_dir, "digest", 0.5, run_id, "student", uri, task="atsa",
                                    engine=engine)
    assert registration["champion"]
    return uri, tmp


@pytest.fixture(scope="module")
def served_champion(registered_champion: tuple[str, Path]) -> Iterator[str]:
    """The base URL of `fsa-distill serve -m models:/student@champion` on a free local port, started and stopped by
    `bench serve`'s own server helper (the one its HTTP part starts `mlflow models serve` with)."""
    uri, tmp = registered_champion
    with served_model(CHAMPION_URI, uri, tmp / "server.log", STARTUP_TIMEOUT_S, server="fsa-distill") as base:
        yield base


def invoke(base: str, texts: list[str]) -> list[dict]:
    response = httpx.post(f"{base}/invocations", json={"dataframe_records": [{"text": t} for t in texts]},
                          timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_one_review(served_champion: str) -> None:
    [answer] = invoke(served_champion, ["Great pizza but slow service."])
    assert answer == {"raw": "pizza | positive ; service | negative",
                      "targets": [{"aspect": "pizza", "polarity": "positive"},
                                  {"aspect": "service", "polarity": "negative"}]}


def test_a_batch_in_order(served_champion: str) -> None:
    answers = invoke(served_champion, list(TAUGHT_ATSA))
    assert [answer["raw"] for answer in answers] == list(TAUGHT_ATSA.values())
    assert answers[2]["targets"] == [{"aspect": "wine list", "polarity": "neutral"}]


def test_an_empty_review(served_champion: str) -> None:
    assert invoke(served_champion, [""]) == [{"raw": "", "targets": []}]


@pytest.mark.parametrize(("records", "params", "message"), [
    ([{"text": None}], {}, "row 0: text must be a string, got null"),
    ([{"text": "fine"}, {"text": 5}], {}, "row 1: text must be a string, got int"),
    ([{"text": "x"}], {"batch_size": MAX_BATCH_SIZE + 1}, f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE}"),
    ([{"text": "x"}], {"max_new_tokens": 0}, f"max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS}"),
    ([{"text": "x"}] * (MAX_TEXTS + 1), {}, f"at most {MAX_TEXTS} texts per request"),
])
def test_bad_requests_are_400_with_a_readable_message(served_champion: str, records: list[dict],
                                                       params: dict, message: str) -> None:
    """Issue #23: the served model guards itself; no stack trace goes back to the caller."""
    body = {"dataframe_records": records, **({"params": params} if params else {})}
    response = httpx.post(f"{served_champion}/invocations", json=body, timeout=120)
    assert response.status_code == 400, response.text
    assert message in response.json()["message"]
    assert "stack_trace" not in response.json() and "Traceback" not in response.text


def _nested(depth: int, text: str = "x") -> bytes:
    """A valid request whose params hold a list nested `depth` deep in all."""
    return (b'{"dataframe_records": [' + json.dumps({"text": text}).encode() + b'], "params": {"x": '
            + b"[" * (depth - 2) + b"]" * (depth - 2) + b"}}")


def _chunks(size: int) -> Iterator[bytes]:
    """A body streamed without Content-Length (chunked), so the limit is found while it is read."""
    yield b'{"dataframe_records": [{"text": "'
    for _ in range(size // 2**20):
        yield b"x" * 2**20
    yield b'"}]}'


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"[" * 100_000 + b"]" * 100_000, 400, (f"the JSON body nests 100000 levels deep; the server takes at most "
                                            f"{MAX_JSON_DEPTH}")),
    (_nested(MAX_JSON_DEPTH + 1), 400, f"nests {MAX_JSON_DEPTH + 1} levels deep"),
    (b" " * (MAX_BODY_BYTES + 1), 413, f"larger than the server's limit of {MAX_BODY_BYTES} bytes"),
    ("chunked", 413, f"larger than the server's limit of {MAX_BODY_BYTES} bytes"),
])
def test_bodies_too_large_or_too_deep_are_4xx(served_champion: str, body: bytes | str, status: int,
                                              message: str) -> None:
    """Issue #23: a body past the size limit is a 413 (never read whole), a JSON body nested past the depth limit
    a 400 (MLflow alone answers 500: its parser recurses); one JSON message, no stack trace."""
    content = _chunks(MAX_BODY_BYTES + 2**20) if body == "chunked" else body
    response = httpx.post(f"{served_champion}/invocations", content=content, timeout=120,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["message"]
    assert "stack_trace" not in response.json() and "Traceback" not in response.text


def test_a_body_within_the_limits_reaches_the_model(served_champion: str) -> None:
    """The guard hands an allowed body on unchanged: nested to the limit, with brackets and escaped quotes inside
    its text (not counted), it gets the model's own answer."""
    text = 'Nice screen. "' + "[{" * MAX_JSON_DEPTH
    response = httpx.post(f"{served_champion}/invocations", content=_nested(MAX_JSON_DEPTH, text), timeout=120,
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == invoke(served_champion, [text])


def test_a_100_kb_review(served_champion: str, talking_student_dir: Path) -> None:
    from fsa_distill.core.answers import structured_answer
    from fsa_distill.core.text_budget import cut_text
    from fsa_distill.models.student.engines import load_engine

    review = "Bad battery, good keyboard. " + "The rest is filler text about nothing. " * 2600
    assert len(review.encode()) > 100_000
    [answer] = invoke(served_champion, [review])
    # Cut to the student's 512-token input as `predict` cuts it, then decoded as the same engine does in-process.
    cut = cut_text(review, MAX_TEXT_CHARS)
    local = load_engine(DistillConfig().student.engine, talking_student_dir).decode([cut])[0]
    assert answer == structured_answer(local, "atsa", cut)
    assert answer["raw"] and all(target["aspect"] in review for target in answer["targets"])


def requirements_only_venv(venv: Path, requirements: list[str]) -> Path:
    """A fresh venv whose site-packages holds exactly `requirements` and what they require (markers and extras
    honoured), linked from this environment's installed copies rather than downloaded again; nothing else, so
    no fsa_distill. Each pinned requirement must match the installed version it links."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    (site,) = venv.glob("lib/python3*/site-packages")
    pending = [(Requirement(line), True) for line in requirements if line.strip() and not line.startswith("#")]
    seen: set[str] = set()
    while pending:
        requirement, pinned = pending.pop()
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:  # not installed here either, so nothing the model needs at run time
            continue
        if pinned:
            assert dist.version.split("+")[0] in requirement.specifier, (requirement, dist.version)
        if canonicalize_name(requirement.name) in seen:
            continue
        seen.add(canonicalize_name(requirement.name))
        for top in {Path(str(file)).parts[0] for file in dist.files or [] if not str(file).startswith("..")}:
            if top != "__pycache__" and not (site / top).exists():
                (site / top).symlink_to(Path(str(dist.locate_file(top))))
        for line in dist.requires or []:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": extra})
                                            for extra in ("", *requirement.extras)):
                pending.append((needed, False))
    assert "fsa-distill" not in seen
    return venv


def test_the_champion_answers_alike_in_a_venv_without_fsa_distill(registered_champion: tuple[str, Path],
                                                                   served_champion: str, tmp_path: Path) -> None:
    """The registered model carries the fsa_distill modules it imports and pinned requirements: loaded in a venv
    that holds only those requirements, it gives the answers the server in the project's venv gives."""
    import mlflow

    uri, _ = registered_champion
    model_dir = Path(mlflow.artifacts.download_artifacts("models:/student@champion", dst_path=str(tmp_path / "model"),
                                                         tracking_uri=uri))
    requirements = (model_dir / "requirements.txt").read_text().splitlines()
    assert all("==" in line for line in requirements if line.strip()), requirements
    venv = requirements_only_venv(tmp_path / "venv", requirements)
    texts = [*TAUGHT_ATSA, ""]
    probe = ("import importlib.util, json, sys\n"
             "assert importlib.util.find_spec('fsa_distill') is None, 'fsa_distill is installed'\n"
             "import mlflow.pyfunc, pandas\n"
             "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
             "import fsa_distill_serving\n"
             "print(fsa_distill_serving.__file__)\n"
             "print(json.dumps(model.predict(pandas.DataFrame({'text': json.loads(sys.argv[2])}))))")
    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    done = subprocess.run([str(venv / "bin" / "python"), "-c", probe, str(model_dir), json.dumps(texts)],
                          check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    where, answers = done.stdout.strip().splitlines()[-2:]
    assert where == str(model_dir / "code" / "fsa_distill_serving" / "__init__.py")
    assert json.loads(answers) == invoke(served_champion, texts)
    assert [answer["raw"] for answer in json.loads(answers)] == [*TAUGHT_ATSA.values(), ""]


def test_bench_load_level_over_http(served_champion: str) -> None:
    """`bench serve --part http`'s load driver on the real server: two clients, a bounded number of requests,
    every answer the taught one, and latency figures that are ordered."""
    texts = list(TAUGHT_ATSA)
    level = drive(served_champion, texts, clients=2, max_requests=6, max_seconds=120, max_new_tokens=24)
    assert (level["requests"], level["errors"], level["clients"]) == (6, 0, 2)
    assert {index % len(texts): raw for index, raw in level["raws"].items()} == dict(enumerate(TAUGHT_ATSA.values()))
    assert 0 < level["p50_ms"] <= level["p99_ms"] and level["requests_per_s"] > 0
    capped = drive(served_champion, texts, clients=1, max_requests=10_000, max_seconds=1, max_new_tokens=24)
    assert 0 < capped["requests"] < 10_000 and capped["seconds"] < 60  # the time cap ends a level


def test_bench_engine_speed_is_the_served_engine(registered_champion: tuple[str, Path]) -> None:
    """The engine figures beside the HTTP ones come from the logged model's own engine, which answers as the
    server does."""
    uri, _ = registered_champion
    result = engine_speed(CHAMPION_URI, uri, list(TAUGHT_ATSA), one_per_call=4, max_new_tokens=24)
    assert result["engine"] == DistillConfig().student.engine
    assert result["outputs"] == list(TAUGHT_ATSA.values())
    assert result["one_per_call"]["reviews_per_s"] > 0 and result["batched"]["reviews"] == 4
