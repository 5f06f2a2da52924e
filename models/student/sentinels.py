"""T5 sentinel tokens (`<extra_id_N>`) for span-corruption denoising (the study's arm B).

The offline tokenizer is trained without them; the study adds them to the one tokenizer every arm shares, so the
student's architecture and vocabulary stay identical across arms (the arms that never see a sentinel simply
never use those rows of the embedding).
"""

from __future__ import annotations

from pathlib import Path

from fsa_distill.core.files import atomic_dir

N_SENTINELS = 32  # T5 has 100; a review of this corpus needs at most ~10 spans


def add_sentinel_tokens(student_dir: Path, out_dir: Path, n_sentinels: int = N_SENTINELS) -> Path:
    """Copy the student at `student_dir` to `out_dir` with `<extra_id_0..n-1>` as special tokens."""
    from fsa_distill.models.student.load import load_student

    model, tokenizer = load_student(student_dir)
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [f"<extra_id_{i}>" for i in range(n_sentinels)]},
        replace_extra_special_tokens=False,
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8)
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        spec = Path(student_dir) / "student_spec.txt"
        if spec.exists():
            (tmp / "student_spec.txt").write_text(spec.read_text(encoding="utf-8"), encoding="utf-8")
    return Path(out_dir)
