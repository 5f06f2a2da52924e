"""Serving speed over HTTP: the default student as the registry stores it, behind a real `mlflow models serve`.

Why beside `bench serve`'s engine figures: a user reaches the champion through the scoring server, not through
the engine, and the server adds JSON, pandas, structuring and one request per review. So, in one run:

- The demo profile's student, untrained (for `minilm-l6` the MiniLM warm start as built; speed does not depend
  on training), is logged as the project's pyfunc model (tasks/register.log_student_model) in a throwaway SQLite
  MLflow, with the profile's engine.
- The engine's own reviews/s: the logged model loaded in-process (the very engine the server runs), the same
  reviews decoded one per call (what one request carries) and in batches, before the server starts and again
  after it stops (`engine_after_server`): on a shared machine the two show how far a figure moves by itself;
  `http_vs_engine_one_client` is against their mean.
- The server: `mlflow models serve --env-manager local` on a free loopback port (one uvicorn worker, MLflow's
  default), polled on /ping; then 1, 4 and 16 concurrent clients (threads, one httpx client each), one review per
  request, each level bounded by a request count and a time cap. Requests/s, p50 / p99 latency and errors per
  level. The server's whole process group is stopped in a `finally`.

Every request and engine call asks for `max_new_tokens`; the untrained warm start writes special tokens up to
that budget (raw answer ""), so each review costs the full budget: recorded as `decoded_tokens_per_review`. The
server's answers are checked against the engine's (`same_answers_as_engine`). Saved (as the `http` part of
docs/results/serve.json, the other parts kept) for the full levels and request count only.

    fsa-distill bench serve --part http --json
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

LEVELS = (1, 4, 16)
STARTUP_TIMEOUT_S = 300.0  # model load + uvicorn start on a loaded 2-core machine


def log_model(model_dir: Path, work: Path, engine: str) -> tuple[str, str]:
    """(tracking URI, model URI): `model_dir` logged as the registry logs it, in a SQLite MLflow under `work`."""
    from mlflow.tracking import MlflowClient

    from fsa_distill.tasks.tracking.register import log_student_model

    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("bench-serve-http", artifact_location=(work / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    return uri, log_student_model(model_dir, run_id, uri, task="atsa", engine=engine)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# How users start each server: MLflow's own command, or the project's guarded one (cli/commands/serve.py).
SERVERS = {"mlflow": ["-m", "mlflow", "models", "serve", "--env-manager", "local"],
           "fsa-distill": ["-m", "fsa_distill.cli", "serve"]}


@contextmanager
def served_model(model_uri: str, tracking_uri: str, log_path: Path, startup_timeout_s: float = STARTUP_TIMEOUT_S,
                 server: str = "mlflow") -> Iterator[str]:
    """The base URL of `mlflow models serve -m model_uri` (or `fsa-distill serve`) on a free loopback port, started
    as users start it (its own process group, this environment's uvicorn first on PATH), healthy on /ping;
    stopped whatever happens."""
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, *SERVERS[server], "-m", model_uri, "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_healthy(process, f"{base}/ping", startup_timeout_s, log_path)
            yield base
        finally:
            stop_group(process)


def wait_until_healthy(process: subprocess.Popen, url: str, timeout_s: float, log_path: Path) -> None:
    """Poll `url` until it answers 200; raise at once, with the server's log, if the server exits."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited ({process.returncode}):\n{_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url}: not healthy within {timeout_s} s:\n{_tail(log_path)}")
        time.sleep(0.5)


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


def stop_group(process: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM the server's process group (the server and its uvicorn worker), SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)



def drive(base: str, texts: list[str], clients: int, max_requests: int, max_seconds: float,
          max_new_tokens: int) -> dict[str, Any]:
    """`clients` threads, each with its own HTTP client, send one review per request (texts in turn) until
    `max_requests` are sent or `max_seconds` have passed; requests/s counts answered requests over the wall time."""
    import httpx

    lock = threading.Lock()
    sent = [0]
    latencies: list[float] = []
    errors: list[str] = []
    raws: dict[int, str] = {}
    deadline = time.perf_counter() + max_seconds

    def client() -> None:
        with httpx.Client(base_url=base, timeout=max(60.0, max_seconds)) as http:
            while True:
                with lock:
                    if sent[0] >= max_requests or time.perf_counter() >= deadline:
                        return
                    index = sent[0]
                    sent[0] += 1
                body = {"dataframe_records": [{"text": texts[index % len(texts)]}],
                        "params": {"max_new_tokens": max_new_tokens}}
                started = time.perf_counter()
                try:
                    response = http.post("/invocations", json=body)
                    error = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as failure:
                    error = type(failure).__name__
                latency = time.perf_counter() - started
                with lock:
                    if error is None:
                        latencies.append(latency)
                        raws[index] = response.json()["predictions"][0]["raw"]
                    else:
                        errors.append(error)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    return {**level_figures(latencies, errors, wall_s, clients), "raws": raws}


def level_figures(latencies: list[float], errors: list[str], wall_s: float, clients: int) -> dict[str, Any]:
    ok = len(latencies)
    return {
        "clients": clients, "requests": ok + len(errors), "errors": len(errors),
        "error_kinds": sorted(set(errors)), "seconds": round(wall_s, 2),
        "requests_per_s": round(ok / wall_s, 2) if wall_s else 0.0,
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1) if latencies else None,
        "p99_ms": round(1000 * float(np.percentile(latencies, 99)), 1) if latencies else None,
        "mean_ms": round(1000 * statistics.fmean(latencies), 1) if latencies else None,
    }


def decoded_tokens_per_review(engine: Any, texts: list[str], max_new_tokens: int) -> float | None:
    """Tokens the engine decodes per review, special ones included (a raw answer hides them); CTranslate2 only."""
    translator = getattr(engine, "translator", None)
    if translator is None:
        return None
    ids = engine.tokenizer(texts, truncation=True)["input_ids"]
    results = translator.translate_batch([engine.tokenizer.convert_ids_to_tokens(row) for row in ids],
                                         beam_size=1, max_decoding_length=max_new_tokens)
    return round(statistics.fmean(len(result.hypotheses[0]) for result in results), 1)


def engine_speed(model_uri: str, tracking_uri: str, texts: list[str], one_per_call: int,
                 max_new_tokens: int, batch_size: int = 32) -> dict[str, Any]:
    """Reviews/s of the engine inside the logged model, loaded in-process as the server loads it: one review per
    call (the work of one request) and in batches; with its outputs, to check the server's answers against."""
    import mlflow
    import mlflow.pyfunc

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)  # `models:/…` URIs resolve through the global tracking URI only
    try:
        engine = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().engine
    finally:
        mlflow.set_tracking_uri(previous)
    engine.decode(texts[:4], batch_size=1, max_new_tokens=max_new_tokens)  # warm-up
    started = time.perf_counter()
    outputs = [engine.decode([text], batch_size=1, max_new_tokens=max_new_tokens)[0]
               for text in texts[:one_per_call]]
    single_s = time.perf_counter() - started
    started = time.perf_counter()
    engine.decode(texts, batch_size=batch_size, max_new_tokens=max_new_tokens)
    batched_s = time.perf_counter() - started
    translator = getattr(engine, "translator", None)  # the model's own copy of the engine classes: no isinstance
    return {"engine": engine.name, "compute_type": translator.compute_type if translator else "float32",
            "one_per_call": {"reviews": len(outputs), "reviews_per_s": round(len(outputs) / single_s, 2)},
            "batched": {"reviews": len(texts), "batch_size": batch_size,
                        "reviews_per_s": round(len(texts) / batched_s, 2)},
            "decoded_tokens_per_review": decoded_tokens_per_review(engine, texts[:16], max_new_tokens),
            "outputs": outputs}


def untrained_student(spec: str, work: Path, data_dir: Path | None) -> Path:
    """The student `spec` as built before any training (cached in `work`): serving speed does not depend on the
    weights, and a random or warm-started student decodes the full budget, so every request does equal work."""
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.core.config import StudentConfig
    from fsa_distill.models.student import build_student

    folder = work / f"untrained-{spec}"
    if not (folder / "config.json").exists():
        train = [s["sentence"] for s in load_sentences("atsa", "rest14", "train", data_dir)]
        build_student(spec, folder, train, StudentConfig().vocab_size)  # the texts train a named size's tokenizer
    return folder


def load_levels(base: str, texts: list[str], clients: tuple[int, ...], max_requests: int, max_seconds: float,
                max_new_tokens: int) -> tuple[dict[str, Any], dict[int, str]]:
    """Each level after a short warm-up of its own; the answers of all levels, by text index."""
    levels: dict[str, Any] = {}
    raws: dict[int, str] = {}
    for count in clients:
        drive(base, texts, count, 2 * count, max_seconds, max_new_tokens)  # every client's connection opened
        level = drive(base, texts, count, max_requests, max_seconds, max_new_tokens)
        raws.update({index % len(texts): raw for index, raw in level.pop("raws").items()})
        levels[str(count)] = level
    return levels, raws


FULL_REQUESTS = 200  # requests per level of a run that is saved


def measure(model_dir: Path, engine: str, texts: list[str], work: Path, clients: tuple[int, ...],
            max_requests: int, max_seconds: float, max_new_tokens: int) -> dict[str, Any]:
    """The engine in-process, then the server at each level, then the engine again: two engine figures bracket
    the HTTP ones, so the spread of a shared machine shows."""
    with tempfile.TemporaryDirectory(prefix="http-", dir=work) as temp:
        tracking_uri, model_uri = log_model(model_dir, Path(temp), engine)
        one_per_call = min(len(texts), 128)
        before = engine_speed(model_uri, tracking_uri, texts, one_per_call, max_new_tokens)
        started = time.perf_counter()
        with served_model(model_uri, tracking_uri, Path(temp) / "server.log") as base:
            startup_s = time.perf_counter() - started
            levels, raws = load_levels(base, texts, clients, max_requests, max_seconds, max_new_tokens)
        after = engine_speed(model_uri, tracking_uri, texts, one_per_call, max_new_tokens)
    outputs = before.pop("outputs")
    after.pop("outputs")
    compared = [index for index in raws if index < len(outputs)]
    return {"server_startup_s": round(startup_s, 1), "engine": before,
            "engine_after_server": {key: after[key] for key in ("one_per_call", "batched")}, "levels": levels,
            "same_answers_as_engine": f"{sum(raws[i] == outputs[i] for i in compared)}/{len(compared)}"}


def run_http_bench(clients: tuple[int, ...] = LEVELS, max_requests: int = FULL_REQUESTS, max_seconds: float = 30.0,
                   max_new_tokens: int = 32, n_texts: int = 256,
                   work_dir: Path = Path("work"), data_dir: Path | None = None,
                   results_path: Path | None = None) -> dict[str, Any]:
    """The demo profile's student, untrained, served over HTTP at each level of `clients`, beside its engine
    in-process; saved as the `http` part of `results_path` for a full run (LEVELS, FULL_REQUESTS)."""
    from fsa_distill.core.config import resolve_config
    from fsa_distill.perf import machine
    from fsa_distill.perf.bench_serve import speed_sentences

    student = resolve_config("demo", environ={}).student
    work = Path(work_dir) / "bench-serve"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = untrained_student(student.model, work, data_dir)
    texts = speed_sentences(n_texts, data_dir)
    load_before = [round(value, 2) for value in os.getloadavg()]
    measured = measure(model_dir, student.engine, texts, work, clients, max_requests, max_seconds, max_new_tokens)
    engine_rates = [measured[key]["one_per_call"]["reviews_per_s"] for key in ("engine", "engine_after_server")]
    result = {
        "student": student.model,
        "weights": "untrained (as built, before pretraining or fine-tuning): speed does not depend on training",
        "served_as": "the project's pyfunc model (tasks/register.log_student_model), `mlflow models serve "
                     "--env-manager local`, one uvicorn worker, 127.0.0.1",
        "request": "one review per request, params max_new_tokens; texts: distinct rest14 sentences in turn",
        "max_new_tokens": max_new_tokens,
        "bounds": {"requests_per_level": max_requests, "seconds_per_level": max_seconds},
        **measured,
        "http_vs_engine_one_client": _ratio(measured["levels"].get("1"), statistics.fmean(engine_rates)),
        "load_avg_before": load_before, "load_avg_after": [round(value, 2) for value in os.getloadavg()],
        "machine": machine(),
    }
    if results_path is not None and tuple(clients) == LEVELS and max_requests >= FULL_REQUESTS:
        write_json_atomically_merged(Path(results_path), "http", result)
    return result


def _ratio(level: dict[str, Any] | None, engine_reviews_per_s: float) -> float | None:
    return round(level["requests_per_s"] / engine_reviews_per_s, 2) if level else None


def write_json_atomically_merged(path: Path, part: str, section: dict[str, Any]) -> None:
    """Replace only `part` of the results file; the other parts stay as they were measured."""
    import json

    from fsa_distill.core.files import write_json_atomically

    previous = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    write_json_atomically(path, {**previous, part: section})
