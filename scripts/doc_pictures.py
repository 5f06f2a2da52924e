"""Retake docs/images/report.png and docs/images/history.png from a work dir's real runs (headless Chromium).

    .venv/bin/python scripts/doc_pictures.py work [experiment]     # after two `fsa-distill run` into `work`

The report is the newest run's (<work>/reports/<run id>/report.html); the history page is `fsa-distill history`'s.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(work: Path, experiment: str = "fsa-distill") -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from fsa_distill.tasks.tracking.history import history_page

    report = max((work / "reports").glob("*/report.html"), key=lambda path: path.stat().st_mtime)
    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temp:
        page = Path(temp) / "history.html"
        page.write_text(history_page(f"sqlite:///{work.resolve() / 'mlflow.db'}", experiment, "fsa-distill-student",
                                     "http://127.0.0.1:5050", (work / "reports").resolve().as_uri() + "/"),
                        encoding="utf-8")
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1300,2400", f"--user-data-dir={temp}/profile"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(report.as_uri())
            driver.save_screenshot(str(out / "report.png"))
            driver.set_window_size(1300, 1900)
            driver.get(page.as_uri())
            WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#plot-seconds .main-svg"))
            driver.save_screenshot(str(out / "history.png"))
        finally:
            driver.quit()
    print(f"wrote {out / 'report.png'} ({report.parent.name}) and {out / 'history.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
