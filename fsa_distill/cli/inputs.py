"""Path checks every command runs before any model loads: the CLI's half of "one clear error, nothing written"."""

from __future__ import annotations

import os
from pathlib import Path

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.paths import check_input_dir, check_input_file, check_output_dir


def benchmark_data_dir(data_dir: Path | None) -> Path | None:
    """`--data-dir`, else FSA_DATA_DIR, else None (the default search: ./data, ../shared, download).

    Commands that read the benchmark outside a flow call this, so they honour the variable exactly as the config
    resolver does for `run`.
    """
    chosen = data_dir or os.environ.get("FSA_DATA_DIR") or None
    if chosen is None:
        return None
    source = "--data-dir" if data_dir else "FSA_DATA_DIR"
    return check_input_dir(chosen, f"benchmark folder (from {source})")


def check_config_paths(config: DistillConfig) -> None:
    """Every path inside a resolved config: inputs exist with the right kind, the work dir can be written."""
    check_output_dir(config.work_dir, "work dir")
    if config.data.data_dir is not None:
        check_input_dir(config.data.data_dir, "benchmark folder (data.data_dir)")
    for review_file in config.corpus.review_files:
        check_input_file(review_file, "review file (corpus.review_files)")
    if config.corpus.heldout_file is not None:
        check_input_file(config.corpus.heldout_file, "held-out file (corpus.heldout_file)")
    if config.generation.prompt_dir is not None:
        check_input_dir(config.generation.prompt_dir, "prompt folder (generation.prompt_dir)")
