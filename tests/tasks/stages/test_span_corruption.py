"""Arm B's span corruption: the source and target together give back the review, about 15% is dropped, and the
shared student's tokenizer keeps every sentinel whole."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fsa_distill.tasks.stages.span_corruption import corrupt

REVIEW = ("The pizza was great but the service was slow and the waiter forgot our drinks twice, although the "
          "dessert menu made up for most of it and the prices were fair for the neighbourhood.")


def restore(source: str, target: str) -> str:
    """Put each sentinel's words back into the source (the inverse the denoising objective teaches)."""
    spans = dict(re.findall(r"(<extra_id_\d+>) ((?:(?!<extra_id_)\S+ ?)*)", target + " "))
    return " ".join(re.sub(r"<extra_id_\d+>", lambda m: spans[m.group(0)].strip(), source).split())


def test_source_and_target_restore_the_review_and_drop_about_15_percent() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        source, target = corrupt(REVIEW, rng, max_spans=31)
        assert restore(source, target) == REVIEW
        sentinels = re.findall(r"<extra_id_(\d+)>", source)
        assert sentinels == [str(i) for i in range(len(sentinels))]  # numbered in order, as T5's
        assert target.endswith(f"<extra_id_{len(sentinels)}>")
        dropped = len(re.sub(r"<extra_id_\d+>", " ", target).split())
        assert dropped == round(0.15 * len(REVIEW.split()))


def test_short_texts_stay_usable() -> None:
    rng = np.random.default_rng(0)
    assert corrupt("Great!", rng, max_spans=31) == ("Great!", "<extra_id_0>")
    source, target = corrupt("Great food!", rng, max_spans=31)
    assert restore(source, target) == "Great food!" and "<extra_id_0>" in source


def test_the_shared_tokenizer_keeps_sentinels_whole(tiny_student_dir: Path, tmp_path: Path) -> None:
    from fsa_distill.models.student.load import load_student
    from fsa_distill.models.student.sentinels import add_sentinel_tokens

    model_dir = add_sentinel_tokens(tiny_student_dir, tmp_path / "with-sentinels", n_sentinels=4)
    model, tokenizer = load_student(model_dir)
    ids = tokenizer("The pizza <extra_id_0> slow <extra_id_3>")["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<extra_id_3>") in ids
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
