"""The history page (`fsa-distill history`), rendered by headless Chromium on a tracking store of three finished
runs and a failed one, written through MLflow's client: the first run promoted, the second kept the champion (the
gate rejected it), the third promoted. Checked on the page plotly drew: the F1 chart with both champion changes
marked, the cost table, the registered versions with their aliases, and links that open each run's report.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsa_distill.cli.app import app
from fsa_distill.perf.bench_history import synthetic_store
from tests.flows.test_dashboard import browser  # noqa: F401 - the module's headless Chromium fixture

pytestmark = pytest.mark.slow
MODEL = "fsa-distill-student"  # registry.model_name's default


@pytest.fixture(scope="module")
def history_file(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("history") / "work"
    work.mkdir()
    run_ids = synthetic_store(f"sqlite:///{work / 'mlflow.db'}", "weekly", MODEL, f1s=[0.40, 0.35, None, 0.45],
                              reports_dir=work / "reports")
    out = work / "history.html"
    result = CliRunner().invoke(app, ["history", "--out", str(out), "--set", f"work_dir={work}",
                                      "--set", "tracking.experiment_name=weekly"])
    assert result.exit_code == 0, result.output
    return {"path": out, "run_ids": run_ids, "work": work}


def test_history_page_in_a_browser(history_file: dict, browser, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(history_file["path"].as_uri())
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot-f1 .main-svg"))
    shot = tmp_path / "history.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")

    f1_chart = browser.find_element(By.ID, "plot-f1")
    assert "champion change" in f1_chart.text  # the legend plotly drew
    stars = browser.execute_script(
        "return document.getElementById('plot-f1').data.filter(t => t.name.startsWith('champion change'))[0]"
        ".x.length")
    assert stars == 2  # week 1 and week 4 were promoted; week 2 was rejected, week 3 failed
    assert len(f1_chart.find_elements(By.CSS_SELECTOR, ".shapelayer path")) == 2  # a dotted line per change
    assert len(f1_chart.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace .point")) >= 3 * 6

    rows = browser.find_elements(By.CSS_SELECTOR, "#cost tbody tr")
    assert len(rows) == 4 and "FAILED" in rows[1].text
    assert "kept_champion" in rows[2].text and "promoted" in rows[0].text and "cpu (2 cores)" in rows[0].text
    versions = browser.find_element(By.ID, "versions").text
    assert "@champion" in versions and "@challenger" in versions

    report_link = rows[2].find_element(By.CSS_SELECTOR, "a.report")
    mlflow_link = rows[2].find_element(By.CSS_SELECTOR, "a.mlflow").get_attribute("href")
    second_run = history_file["run_ids"][1]
    assert mlflow_link.endswith(f"/runs/{second_run}")
    browser.get(report_link.get_attribute("href"))
    assert second_run in browser.find_element(By.TAG_NAME, "h1").text  # the run's own report opened


def test_history_of_a_missing_experiment_is_one_error_line(history_file: dict, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["history", "--out", str(tmp_path / "h.html"), "--set",
                                      f"work_dir={history_file['work']}", "--set", "tracking.experiment_name=nope"])
    assert result.exit_code == 2 and "no such experiment" in result.output
    assert not (tmp_path / "h.html").exists()
