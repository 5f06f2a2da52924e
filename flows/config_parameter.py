"""The one config of a flow run: given already resolved, or resolved here from a deployment's parameters.

The CLI and the retrain flow resolve the config themselves (they need it before the run starts) and hand it
down; a deployment can only pass plain parameters (a profile, a config file, `key=value` overrides). Either way
the config is resolved exactly once per run, by `resolve_config`, the only code that reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from fsa_distill.core.config import ConfigError, DistillConfig, resolve_config


def flow_config(
    config: DistillConfig | None, profile: str, config_file: str | None, overrides: list[str] | None
) -> DistillConfig:
    """`config` as given, or profile + config file + overrides resolved; both at once is a mistake."""
    if config is None:
        return resolve_config(profile, Path(config_file) if config_file else None, overrides or [])
    if config_file or overrides:
        raise ConfigError("pass either a resolved config or a config file and overrides to resolve, not both")
    return config
