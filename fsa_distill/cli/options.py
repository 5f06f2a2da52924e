"""Options every single-stage command shares: the config is resolved as `fsa-distill run` resolves it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.core.config import PROFILES


def complete_profile(incomplete: str) -> list[str]:
    """Shell completion of --profile: the known profiles, then YAML files and folders from the working directory."""
    names = [name for name in PROFILES if name.startswith(incomplete)]
    folder, _, stem = incomplete.rpartition("/")
    base = Path(folder or ".")
    if base.is_dir():
        for entry in sorted(base.iterdir()):
            if entry.name.startswith(stem) and (entry.is_dir() or entry.suffix in (".yaml", ".yml")):
                names.append(f"{folder}/{entry.name}" if folder else entry.name)
    return names


Profile = Annotated[str, typer.Option(help=f"Config profile: {', '.join(PROFILES)}, or a profile file's path.",
                                      autocompletion=complete_profile)]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML file merged over the profile.")]
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override one key, e.g. pretrain.max_steps=10.")]
JsonSummary = Annotated[bool, typer.Option("--json", help="Print one JSON summary line only.")]
