"""The review-corpus inbox and the retrain flow's decisions, with `distill` replaced by a recorder.

The end-to-end retrain (real distill) is in tests/flows/test_ops_faults.py::test_inbox_retrain_end_to_end_with_corrupt_file.
"""

from __future__ import annotations

import os
from pathlib import Path

import fsspec
import pytest

from fsa_distill.core.config import DistillConfig
from fsa_distill.flows.retrain_on_new_corpus import retrain
from fsa_distill.tasks.ops.inbox import LEDGER_NAME, Ledger, accepted_corpora, scan_inbox, sha256_bytes

GOOD_JSONL = '{"id": "a1", "text": "The pizza was great but the staff were rude."}\n' \
             '{"id": "a2", "text": "Battery life is awful."}\n'
GOOD_CSV = "id,text\nc1,The screen is bright and sharp.\nc2,Service was slow.\n"


class DistillRecorder:
    """Stands in for the distill subflow: records the resolved config the retrain flow hands it."""

    def __init__(self) -> None:
        self.calls: list[DistillConfig] = []

    def __call__(self, config: DistillConfig) -> dict:
        self.calls.append(config)
        return {"mlflow_run_id": f"run-{len(self.calls)}", "model_version": str(len(self.calls))}

    def review_files(self, call: int = -1) -> list[str]:
        return [str(path) for path in self.calls[call].corpus.review_files]


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    inbox, work = tmp_path / "inbox", tmp_path / "work"
    inbox.mkdir()
    return inbox, work


def _run(inbox: Path | str, work: Path, recorder: DistillRecorder) -> dict:
    from prefect import flow

    @flow(name="retrain-test")
    def wrapper() -> dict:
        return retrain(str(inbox), "demo", None, [f"work_dir={work}"], distill_fn=recorder)

    return wrapper()


def test_new_corpora_are_accepted_once_by_content(dirs: tuple[Path, Path]) -> None:
    inbox, work = dirs
    (inbox / "week1.jsonl").write_text(GOOD_JSONL, encoding="utf-8")
    (inbox / "week1.csv").write_text(GOOD_CSV, encoding="utf-8")
    recorder = DistillRecorder()

    first = _run(inbox, work, recorder)
    assert first["distilled"] and len(first["new"]) == 2 and not first["rejected"]
    stored = sorted(Path(path).name for path in recorder.review_files())
    assert stored == sorted([sha256_bytes(GOOD_JSONL.encode()) + ".jsonl", sha256_bytes(GOOD_CSV.encode()) + ".csv"])
    assert set(Ledger(work / LEDGER_NAME).processed()) == {Path(name).stem for name in stored}

    # Same bytes again, even under a new name: nothing new, no distill run.
    (inbox / "copy-of-week1.jsonl").write_text(GOOD_JSONL, encoding="utf-8")
    second = _run(inbox, work, recorder)
    assert not second["distilled"] and second["already_processed"] == 3
    assert "no new corpus" in second["message"]
    assert len(recorder.calls) == 1

    # A new corpus: distill runs on all accepted corpora, old and new.
    (inbox / "week2.txt").write_text("Lovely terrace.\nCold soup.\n", encoding="utf-8")
    third = _run(inbox, work, recorder)
    assert third["distilled"] and [Path(c["source"]).name for c in third["new"]] == ["week2.txt"]
    assert len(recorder.review_files()) == 3
    assert len(accepted_corpora(work)) == 3


def test_corrupt_and_unreadable_files_are_moved_aside_others_processed(dirs: tuple[Path, Path]) -> None:
    inbox, work = dirs
    (inbox / "good.jsonl").write_text(GOOD_JSONL, encoding="utf-8")
    (inbox / "broken.jsonl").write_text('{"text": "fine"}\n{"text": "cut off', encoding="utf-8")
    (inbox / "latin1.csv").write_bytes("id,text\n1,Caf\xe9 was nice\n".encode("latin-1"))
    (inbox / "notes.pdf").write_bytes(b"%PDF-1.4")
    (inbox / "dangling.jsonl").symlink_to(inbox / "does-not-exist.jsonl")  # unreadable
    (inbox / "upload.jsonl.part").write_text("half", encoding="utf-8")  # still uploading: ignored
    recorder = DistillRecorder()

    summary = _run(inbox, work, recorder)
    assert [Path(c["source"]).name for c in summary["new"]] == ["good.jsonl"]
    rejected = {Path(r["source"]).name: r for r in summary["rejected"]}
    assert set(rejected) == {"broken.jsonl", "latin1.csv", "notes.pdf", "dangling.jsonl"}
    for name, entry in rejected.items():
        assert not os.path.lexists(inbox / name)
        assert os.path.lexists(inbox / "rejected" / name)
        reason = (inbox / "rejected" / f"{name}.reason.txt").read_text(encoding="utf-8")
        assert reason.strip() == entry["reason"]
    assert "line 2" in rejected["broken.jsonl"]["reason"]
    assert "UTF-8" in rejected["latin1.csv"]["reason"]
    assert "unsupported" in rejected["notes.pdf"]["reason"]
    assert (inbox / "upload.jsonl.part").exists()
    assert len(recorder.calls) == 1 and len(recorder.review_files()) == 1


def test_failed_distill_leaves_the_corpus_new_for_the_next_poll(dirs: tuple[Path, Path]) -> None:
    inbox, work = dirs
    (inbox / "good.jsonl").write_text(GOOD_JSONL, encoding="utf-8")

    def failing(config: DistillConfig) -> dict:
        raise RuntimeError("tracking server down")

    from prefect import flow

    @flow(name="retrain-test-failing")
    def wrapper() -> dict:
        return retrain(str(inbox), "demo", None, [f"work_dir={work}"], distill_fn=failing)

    with pytest.raises(RuntimeError):
        wrapper()
    assert Ledger(work / LEDGER_NAME).processed() == set()
    recorder = DistillRecorder()
    assert _run(inbox, work, recorder)["distilled"]  # retried on the next poll
    assert len(recorder.calls) == 1


def test_inbox_on_an_fsspec_uri(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/bucket/inbox/a.jsonl", GOOD_JSONL.encode())
    fs.pipe_file("/bucket/inbox/bad.jsonl", b"not json\n")
    scan = scan_inbox("memory://bucket/inbox", tmp_path / "work")
    assert [Path(c.source).name for c in scan.new] == ["a.jsonl"]
    assert fs.exists("/bucket/inbox/rejected/bad.jsonl")
    assert "not valid JSON" in fs.cat_file("/bucket/inbox/rejected/bad.jsonl.reason.txt").decode()
    fs.rm("/bucket", recursive=True)


def test_ledger_write_is_atomic_and_survives_a_corrupt_ledger_clearly(tmp_path: Path) -> None:
    from fsa_distill.core.errors import InputError

    ledger_path = tmp_path / LEDGER_NAME
    ledger_path.write_text("{half", encoding="utf-8")
    with pytest.raises(InputError, match="inbox ledger is not valid JSON"):
        Ledger(ledger_path).processed()


def test_missing_inbox_is_a_clear_error(tmp_path: Path) -> None:
    from fsa_distill.core.errors import InputError

    with pytest.raises(InputError, match="inbox folder does not exist"):
        scan_inbox(str(tmp_path / "nope"), tmp_path / "work")


def test_symlinks_and_special_files_are_refused_and_copies_stay_private(tmp_path: Path, dirs: tuple[Path, Path]
                                                                         ) -> None:
    """Issue #23: a link to a readable corpus elsewhere is not followed, a FIFO is not read (it would block the
    scan), and an accepted 0600 corpus is stored as 0600."""
    inbox, work = dirs
    outside = tmp_path / "secret.jsonl"
    outside.write_text(GOOD_CSV.replace("c1", "x"), encoding="utf-8")
    (inbox / "link.jsonl").symlink_to(outside)
    os.mkfifo(inbox / "pipe.jsonl")
    (inbox / "private.jsonl").write_text(GOOD_JSONL, encoding="utf-8")
    (inbox / "private.jsonl").chmod(0o600)

    scan = scan_inbox(str(inbox), work)
    reasons = {Path(r.source).name: r.reason for r in scan.rejected}
    assert reasons["link.jsonl"] == "link.jsonl: a symbolic link: not followed (put the file itself into the inbox)"
    assert reasons["pipe.jsonl"].startswith("pipe.jsonl: not a regular file")
    assert outside.exists() and os.path.islink(inbox / "rejected" / "link.jsonl")
    [accepted] = scan.new
    assert Path(accepted.source).name == "private.jsonl"
    assert os.stat(accepted.stored_path).st_mode & 0o777 == 0o600
