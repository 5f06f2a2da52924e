"""Student predictions for a list of texts: load the model folder, decode greedily (models/student/decoding.py).

Used by `fsa-distill predict` and the benchmark flow; fine-tuning decodes its already loaded model directly.
"""

from __future__ import annotations

from pathlib import Path

from fsa_distill.models.student.decoding import greedy_decode
from fsa_distill.models.student.load import load_student
from fsa_distill.models.student.training import pick_device


def generate_predictions(model_dir: Path | str, texts: list[str], batch_size: int = 64,
                         max_new_tokens: int = 100) -> list[str]:
    """Load the student at `model_dir` (InputError if unusable) and decode `texts` greedily, order preserved."""
    model, tokenizer = load_student(model_dir, device=pick_device())
    return greedy_decode(model, tokenizer, texts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                         progress=True)
