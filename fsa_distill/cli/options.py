"""Options every single-stage command shares: the config is resolved as `fsa-distill run` resolves it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.core.config import PROFILES

Profile = Annotated[str, typer.Option(help=f"Config profile: {', '.join(PROFILES)}.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML file merged over the profile.")]
Overrides = Annotated[list[str] | None, typer.Option("--set", help="Override one key, e.g. pretrain.max_steps=10.")]
JsonSummary = Annotated[bool, typer.Option("--json", help="Print one JSON summary line only.")]
