"""Speed and memory benchmarks (`fsa-distill bench …`): kept apart from the evaluation protocol in benchmark/.

Each writes one JSON result file into docs/results/ and compares against a baseline measured in the
same run.
"""

import os
import platform
from pathlib import Path
from typing import Any

# Relative to the working directory: run from the checkout's root it is the committed results folder; an
# installed package writes beside wherever it is run, never into site-packages.
RESULTS_DIR = Path("docs") / "results"


def machine() -> dict[str, Any]:
    """The machine a result was measured on, with its load at the end of the run (this machine is shared)."""
    return {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "platform": platform.platform()}
