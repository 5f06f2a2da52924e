"""tasks/tracking/error_analysis.py: each pair of a test sentence marked by kind, counts, confusion, the fixed
sample."""

from __future__ import annotations

from pathlib import Path

from fsa_distill.tasks.tracking.error_analysis import KINDS, analyse_errors, mark_pairs, teacher_samples
from fsa_distill.tasks.tracking.report import build_report

SENTENCE = {"sentence": "The pizza was great but the waiter was rude.", "aspects": [
    {"target": "pizza", "polarity": "positive", "from": 4, "to": 9},
    {"target": "waiter", "polarity": "negative", "from": 28, "to": 34},
]}


def _kinds(raw: str) -> list[tuple[str, str]]:
    return sorted((mark["element"], mark["kind"]) for mark in mark_pairs("atsa", SENTENCE, raw))


def test_every_kind_of_pair() -> None:
    assert _kinds("pizza | positive ; waiter | negative") == [("pizza", "right"), ("waiter", "right")]
    assert _kinds("pizza | positive ; waiter | positive ; rude | negative ; burger | negative ; junk") == [
        ("burger", "not in the sentence"), ("pizza", "right"), ("rude", "not a gold aspect"),
        ("waiter", "wrong polarity")]
    assert _kinds("") == [("pizza", "missed"), ("waiter", "missed")]
    wrong = next(m for m in mark_pairs("atsa", SENTENCE, "waiter | neutral") if m["kind"] == "wrong polarity")
    assert (wrong["gold"], wrong["predicted"]) == ("negative", "neutral")


def test_counts_confusion_and_the_same_sample_every_run(tmp_path: Path) -> None:
    sentences = [SENTENCE] * 30
    predictions = ["pizza | positive ; waiter | neutral"] * 20 + [""] * 10
    analysis = analyse_errors("atsa", sentences, predictions, sample_size=5)
    assert analysis["counts"] == {"right": 20, "missed": 20, "wrong polarity": 20, "not a gold aspect": 0,
                                  "not in the sentence": 0}
    assert list(analysis["counts"]) == list(KINDS)
    assert analysis["confusion"]["positive"] == {"positive": 20, "(missed)": 10}
    assert analysis["confusion"]["negative"] == {"neutral": 20, "(missed)": 10}
    again = analyse_errors("atsa", sentences, ["x"] * 30, sample_size=5)
    assert [s["index"] for s in again["sample"]] == [s["index"] for s in analysis["sample"]]
    assert len(analysis["sample"]) == 5

    report = build_report({"errors": {"atsa/rest14": {"seed": 42, **analysis}},
                           "variety": {"atsa/rest14/seed-42": {"distinct_outputs": 5, "distinct_per_sentence": 0.25,
                                                                  "top_share": 0.5, "top_output": "food | positive"}},
                           "curves": {"finetune/a/train_loss": [[1, 2.0], [2, 1.0]],
                                      "finetune/a/dev_f1": [[1, 0.1], [2, 0.3]]}}, tmp_path / "report")
    page = report.read_text(encoding="utf-8")
    assert "What the student gets wrong" in page and "[wrong polarity]" in page and "(gold negative)" in page
    assert "Output variety" in page and "50.0%" in page and "0.25" in page
    assert (report.parent / "loss_curves.png").is_file()  # loss and dev F1 on two axes of one panel


def test_teacher_samples_accepted_and_rejected_with_reason(tmp_path: Path) -> None:
    from datasets import Dataset

    accepted = [{"review": f"good {i}", "prompt": "analysis", "response": "ok", "reject_reason": ""}
                for i in range(10)]
    rejected = [{"review": "bad", "prompt": "analysis", "response": "", "reject_reason": "empty response"}]
    Dataset.from_list(accepted).save_to_disk(str(tmp_path / "gen"))
    Dataset.from_list(rejected).save_to_disk(str(tmp_path / "gen" / "rejected"))
    samples = teacher_samples(tmp_path / "gen", tmp_path / "gen" / "rejected", n=3)
    assert len(samples["accepted"]) == 3 and samples["rejected"][0]["reject_reason"] == "empty response"
    assert samples == teacher_samples(tmp_path / "gen", tmp_path / "gen" / "rejected", n=3)
    page = build_report({"teacher_samples": samples}, tmp_path / "report").read_text(encoding="utf-8")
    assert "Sample teacher answers" in page and "empty response" in page
