"""Speed and memory benchmarks (`fsa-distill bench …`): kept apart from the evaluation protocol in benchmark/.

Each writes one JSON result file into benchmark/perf/results/ and compares against a baseline measured in the
same run.
"""

from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmark" / "perf" / "results"
