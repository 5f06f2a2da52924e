"""tasks/tracking/runs.py: a dataset on disk is recorded as MLflow dataset inputs of the run it names."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from datasets import Dataset, DatasetDict

from fsa_distill.core.config import resolve_config
from fsa_distill.tasks.tracking.runs import RunTracker

DIGEST = "0123456789abcdef" * 4


def test_log_dataset_records_every_split_with_its_digest_and_context(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    split = {"review": ["Nice staff.", "Cold soup."], "response": ["staff: positive", "soup: negative"]}
    DatasetDict({"train": Dataset.from_dict(split), "validation": Dataset.from_dict(split)}).save_to_disk(corpus)
    tracker = RunTracker(resolve_config("demo", overrides=[f"work_dir={tmp_path / 'work'}"], environ={}))
    parent = tracker.start_parent("flow", tags={})
    child = tracker.start_child(parent, "pretrain")

    tracker.log_dataset(parent, corpus, "teacher-corpus", DIGEST, "pretraining")

    inputs = tracker.client.get_run(parent).inputs.dataset_inputs
    recorded = sorted((i.dataset.name, i.dataset.digest, i.dataset.source_type, [(t.key, t.value) for t in i.tags])
                      for i in inputs)
    assert recorded == [
        ("teacher-corpus-train", DIGEST[:16], "local", [("mlflow.data.context", "pretraining-train")]),
        ("teacher-corpus-validation", DIGEST[:16], "local",
         [("mlflow.data.context", "pretraining-validation")]),
    ]
    assert all(str(corpus.resolve()) in i.dataset.source for i in inputs)
    profile = json.loads(inputs[0].dataset.profile)
    assert profile["num_rows"] == 2 and "review" in inputs[0].dataset.schema
    assert not tracker.client.get_run(child).inputs.dataset_inputs  # only the run named
    assert mlflow.active_run() is None  # by run id: no fluent "active run" started or left behind
