"""One config resolution per flow run: a resolved config is used as it is, deployment parameters are resolved
once, and the retrain flow hands distill the config it resolved (with the accepted corpora added)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsa_distill.core.config import ConfigError, resolve_config
from fsa_distill.flows.config_parameter import flow_config
from fsa_distill.flows.retrain_on_new_corpus import with_review_files


def test_a_resolved_config_is_used_as_it_is(tmp_path: Path) -> None:
    config = resolve_config("demo", overrides=[f"work_dir={tmp_path}", "finetune.epochs=1"], environ={})
    assert flow_config(config, "demo", None, None) is config
    with pytest.raises(ConfigError, match="not both"):
        flow_config(config, "demo", None, ["finetune.epochs=2"])


def test_deployment_parameters_are_resolved_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSA_WORK_DIR", str(tmp_path))
    config = flow_config(None, "demo", None, ["finetune.epochs=2"])
    assert config.finetune.epochs == 2 and config.work_dir == tmp_path and config.profile == "demo"


def test_review_files_are_added_to_a_copy_and_validated(tmp_path: Path) -> None:
    config = resolve_config("demo", overrides=[f"work_dir={tmp_path}"], environ={})
    updated = with_review_files(config, [tmp_path / "a.jsonl"])
    assert updated.corpus.review_files == [tmp_path / "a.jsonl"] and config.corpus.review_files == []
    assert updated.model_dump(exclude={"corpus"}) == config.model_dump(exclude={"corpus"})
    with pytest.raises(ValueError):
        with_review_files(config, "not a list of paths")  # type: ignore[arg-type]
