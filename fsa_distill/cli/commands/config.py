"""`fsa-distill config show`: the resolved config, every key with its description."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from fsa_distill.cli.console import print_json, user_errors
from fsa_distill.cli.options import Profile
from fsa_distill.core.config import DistillConfig, Section, resolve_config


def _yaml_value(value: Any) -> str:
    """One value in YAML flow style (`[a, b]`, `null`, `'1.0'`); wrapped in a list so PyYAML adds no `...`."""
    return yaml.safe_dump([value], default_flow_style=True, width=2**31, allow_unicode=True).strip()[1:-1]


def comment(description: str | None) -> str:
    """A description as one comment line (section descriptions are docstrings that span lines)."""
    return "# " + " ".join((description or "").split())


def commented_yaml(config: DistillConfig) -> str:
    """The config as YAML with each key's description as a comment above it.

    Written by hand because PyYAML drops comments; the result is still a valid `--config` file.
    """
    values = config.model_dump(mode="json")
    lines: list[str] = []

    def emit(model: type[Section], tree: dict[str, Any], indent: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, Section):
                lines.extend(["", f"{indent}{comment(field.description)}", f"{indent}{name}:"])
                emit(annotation, tree[name], indent + "  ")
            else:
                lines.append(f"{indent}{comment(field.description)}")
                lines.append(f"{indent}{name}: {_yaml_value(tree[name])}")

    emit(DistillConfig, values, "")
    return "\n".join(lines) + "\n"


def show(
    profile: Profile = "demo",
    config_file: Annotated[Path | None, typer.Option("--config", help="YAML file merged over the profile.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override one key, e.g. --set finetune.epochs=3.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the resolved values as one JSON line.")] = False,
) -> None:
    """Print the resolved config (profile + --config + --set + environment) with a description of every key."""
    with user_errors():
        resolved = resolve_config(profile, config_file, overrides or [])
    if as_json:
        print_json(resolved.model_dump(mode="json"))
    else:
        typer.echo(commented_yaml(resolved), nl=False)
