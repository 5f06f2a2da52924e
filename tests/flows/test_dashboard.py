"""The dashboard, driven as a user would: headless Chromium through the MLflow UI after a real (shortened) demo run.

Checked on the rendered pages: the run is listed, its mean_f1 metric shows with the flow's value, the registered
model `fsa-distill-student` shows its version with the `challenger` alias, and the run's report artifact is
there. Screenshots land in <tmp>/screenshots (path printed) for a human look.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.teacher_fixtures import free_port

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parents[2]


def _require_browser() -> None:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("headless Chromium missing: run `make browser` as root (apt-get install chromium "
                    "chromium-driver)")
    pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def engine_in_this_process() -> Iterator[None]:
    """vLLM's engine in the test process (as test_teacher_vllm and test_flow's cache-reuse test do): no test here
    is about the engine process, and both of the module's engine starts (the demo run, the retrain) then skip
    spawning and importing one."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        yield


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: tuple[Path, str],
             engine_in_this_process: None) -> dict:
    """One real distill run (the demo profile shortened by overrides) in its own work dir. The real teacher, not
    imported answers: the retrain test needs this run's SmolLM2 answers in the store to show that only the new
    reviews reach the teacher."""
    _require_browser()
    from fsa_distill.flows.distill import distill
    from tests.flows.test_flow import tiny_overrides

    work = tmp_path_factory.mktemp("dashboard") / "work"
    overrides = [*tiny_overrides(work, smollm2_dir[0]), "tracking.experiment_name=fsa-distill"]
    result = distill(profile="demo", overrides=overrides)
    return {**result, "work_dir": work}


@pytest.fixture(scope="module")
def dashboard(demo_run: dict, tmp_path_factory: pytest.TempPathFactory):
    """`deployments/dashboard.sh start` on the run's work dir, with free ports; stopped afterwards."""
    env = {
        **os.environ,
        "FSA_WORK_DIR": str(demo_run["work_dir"]),
        "FSA_DASHBOARD_MLFLOW_PORT": str(free_port()),
        "FSA_DASHBOARD_PREFECT_PORT": str(free_port()),
        "FSA_DASHBOARD_HISTORY_PORT": str(free_port()),
        "FSA_PREFECT_PORT": str(free_port()),  # no production servers there: the script starts its own UIs
        "FSA_MLFLOW_PORT": str(free_port()),
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
    }
    started = subprocess.run(check=False, args=[str(ROOT / "deployments" / "dashboard.sh"), "start"], env=env, text=True,
                             capture_output=True, timeout=300)
    assert started.returncode == 0, started.stderr
    urls = dict(line.split(":", 1) for line in started.stdout.strip().splitlines())
    yield {key.strip(): value.strip() for key, value in urls.items()}
    subprocess.run(check=False, args=[str(ROOT / "deployments" / "dashboard.sh"), "stop"], env=env, timeout=120)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_for_text(driver, *texts: str, timeout: float = 90) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def all_there(d):
        body = d.find_element(By.TAG_NAME, "body").text
        return body if all(text in body for text in texts) else False

    return WebDriverWait(driver, timeout, poll_frequency=1).until(all_there)


def test_mlflow_ui_shows_run_metric_and_registered_model(demo_run: dict, dashboard: dict, browser,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    from mlflow.tracking import MlflowClient

    shots = tmp_path_factory.mktemp("screenshots")
    base = dashboard["MLflow UI"]
    client = MlflowClient(f"sqlite:///{demo_run['work_dir'] / 'mlflow.db'}")
    run = client.get_run(demo_run["mlflow_run_id"])
    experiment_id = run.info.experiment_id

    # The experiment's run list ("Training runs"; the bare experiment URL opens the GenAI overview in MLflow 3).
    browser.get(f"{base}/#/experiments/{experiment_id}/runs")
    _wait_for_text(browser, run.info.run_name)
    browser.save_screenshot(str(shots / "1-runs.png"))

    # The run page shows the mean_f1 metric with the value the flow returned.
    browser.get(f"{base}/#/experiments/{experiment_id}/runs/{run.info.run_id}")
    body = _wait_for_text(browser, "Metrics", "mean_f1")
    shown = re.search(r"^mean_f1\s*\n\s*([-0-9.e]+)\s*$", body, flags=re.MULTILINE)
    assert shown, body[:2000]
    assert float(shown.group(1)) == pytest.approx(demo_run["mean_f1"], abs=1e-3)
    from selenium.webdriver.common.by import By

    cell = browser.find_element(By.XPATH, "//*[normalize-space(text())='mean_f1']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
    time.sleep(1)
    browser.save_screenshot(str(shots / "2-run-metrics.png"))

    # The registry page shows the model, its version and the challenger alias.
    name, version = demo_run["model_name"], str(demo_run["model_version"])
    browser.get(f"{base}/#/models/{name}")
    body = _wait_for_text(browser, name, f"Version {version}", "@ challenger")
    browser.save_screenshot(str(shots / "3-registered-model.png"))
    if demo_run.get("champion"):
        assert "@ champion" in body
    print(f"screenshots: {shots}")


# The same run also feeds the two other operational flows (one shortened distill run per module keeps it fast).


def test_benchmark_flow_scores_the_registered_model(demo_run: dict) -> None:
    from fsa_distill.flows.benchmark_model import benchmark
    from tests.flows.test_flow import tiny_overrides

    overrides = [*tiny_overrides(demo_run["work_dir"], Path("unused")), "tracking.experiment_name=fsa-distill"]
    result = benchmark(model_uri="models:/fsa-distill-student@challenger", profile="demo", overrides=overrides)
    assert result["model_version"] == str(demo_run["model_version"])
    assert set(result["scores"]) == {"atsa/rest14"}
    assert 0.0 <= result["mean_f1"] <= 1.0
    assert set(result["scores"]["atsa/rest14"]) == {"normal", "implicit", "multi"}
    downloaded = demo_run["work_dir"] / "benchmark" / "models" / f"fsa-distill-student-v{result['model_version']}"
    assert (downloaded / "MLmodel").exists()


def _cache_answers(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as connection:
        accepted = connection.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        rejected = connection.execute("SELECT COUNT(DISTINCT key) FROM rejected WHERE final = 1").fetchone()[0]
    return accepted + rejected


def test_retrain_on_new_corpus_end_to_end(demo_run: dict, smollm2_dir, tmp_path: Path,
                                         engine_in_this_process: None) -> None:
    """A corpus lands in the inbox, a corrupt one beside it: the real distill runs incrementally (only the new
    reviews reach the teacher), the corrupt file is moved aside, and a second poll does nothing."""
    from fsa_distill.flows.retrain_on_new_corpus import retrain_on_new_corpus
    from tests.flows.test_flow import tiny_overrides

    work = demo_run["work_dir"]
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    new_reviews = ["The sushi was fresh and the chef was friendly.", "Terrible wait, cold fries.",
                   "The screen is gorgeous but the fan is loud."]
    (inbox / "week-47.txt").write_text("\n".join(new_reviews) + "\n", encoding="utf-8")
    (inbox / "broken.jsonl").write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    cache = work / "cache" / "teacher_responses.sqlite"
    before = _cache_answers(cache)

    overrides = [*tiny_overrides(work, smollm2_dir[0]), "tracking.experiment_name=fsa-distill"]
    summary = retrain_on_new_corpus(str(inbox), "demo", None, overrides)
    assert summary["distilled"], summary
    assert [Path(c["source"]).name for c in summary["new"]] == ["week-47.txt"]
    assert (inbox / "rejected" / "broken.jsonl.reason.txt").exists()
    n_prompts = 2
    assert _cache_answers(cache) - before == len(new_reviews) * n_prompts, "only the new reviews went to the teacher"
    assert summary["distill"]["model_version"]

    again = retrain_on_new_corpus(str(inbox), "demo", None, overrides)
    assert not again["distilled"] and "no new corpus" in again["message"]
