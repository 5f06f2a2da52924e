"""Retrain when new review corpora land in the inbox: accept them, then run `distill` on every accepted corpus.

Scheduled every 15 minutes by deployments/prefect.yaml. The teacher's per-review cache means only the reviews of
the new corpora go to the teacher; the student is retrained on the whole corpus and promoted only through the
registry's quality gate. No new corpus, no distill run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from fsa_distill.core.config import DistillConfig, resolve_config
from fsa_distill.tasks.ops.inbox import LEDGER_NAME, AcceptedCorpus, Ledger, accepted_corpora, scan_inbox


def run_distill(config: DistillConfig) -> dict[str, Any]:
    """The distill flow as a subflow, on this run's resolved config (imported late: it pulls in torch and vLLM)."""
    from fsa_distill.flows.distill import distill

    return distill(config=config)


def with_review_files(config: DistillConfig, files: list[Path]) -> DistillConfig:
    """A copy of the config that distils on these review corpora (the assignment is validated: a Section
    validates every assignment)."""
    updated = config.model_copy(deep=True)
    updated.corpus.review_files = files
    return updated


@task(name="scan-inbox", retries=2, retry_delay_seconds=10)
def scan_inbox_task(inbox: str, work_dir: Path, text_field: str) -> dict[str, Any]:
    return scan_inbox(inbox, work_dir, text_field).to_dict()


def retrain(
    inbox: str,
    profile: str = "demo",
    config_file: str | None = None,
    overrides: list[str] | None = None,
    text_field: str = "text",
    distill_fn: Callable[[DistillConfig], dict[str, Any]] = run_distill,
) -> dict[str, Any]:
    """The flow body, with the distill call injectable so tests can check the inbox logic alone. The config is
    resolved here, once, and handed to distill as it is (with the accepted corpora added)."""
    logger = get_run_logger()
    config = resolve_config(profile, Path(config_file) if config_file else None, list(overrides or []))
    scan = scan_inbox_task(inbox, config.work_dir, text_field)
    summary: dict[str, Any] = {
        "inbox": inbox,
        "new": scan["new"],
        "rejected": scan["rejected"],
        "already_processed": len(scan["already_processed"]),
        "distilled": False,
        "distill": None,
    }
    for rejected in scan["rejected"]:
        logger.warning("rejected %s: %s", rejected["source"], rejected["reason"])
    if not scan["new"]:
        summary["message"] = "no new corpus in the inbox; nothing to distill"
        logger.info(summary["message"])
        return summary

    configured = [Path(path) for path in config.corpus.review_files]
    review_files = sorted(set(configured) | set(accepted_corpora(config.work_dir)))
    logger.info("%d new corpora; distilling on %d corpus files", len(scan["new"]), len(review_files))
    result = distill_fn(with_review_files(config, review_files))

    Ledger(config.work_dir / LEDGER_NAME).record(
        [AcceptedCorpus(**corpus) for corpus in scan["new"]],
        mlflow_run_id=result.get("mlflow_run_id"),
        model_version=result.get("model_version"),
    )
    summary.update(distilled=True, distill=result, message=f"distilled on {len(review_files)} corpus files")
    return summary


@flow(name="retrain-on-new-corpus", log_prints=True)
def retrain_on_new_corpus(
    inbox: str,
    profile: str = "demo",
    config_file: str | None = None,
    overrides: list[str] | None = None,
    text_field: str = "text",
) -> dict[str, Any]:
    """Accept new corpora from `inbox` (path or fsspec URI) and, if any, retrain on all accepted corpora."""
    return retrain(inbox, profile, config_file, overrides, text_field)
