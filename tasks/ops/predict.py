"""Student predictions for a list of texts: load the model folder on an engine (models/student/engines.py: torch
or CTranslate2), decode greedily.

Used by `fsa-distill predict` and the benchmark flow; fine-tuning decodes its already loaded model directly.
"""

from __future__ import annotations

from pathlib import Path

from fsa_distill.models.student.engines import load_engine


def generate_predictions(model_dir: Path | str, texts: list[str], batch_size: int = 64,
                         max_new_tokens: int = 100, engine: str = "torch",
                         ct2_dir: Path | str | None = None) -> list[str]:
    """Load the student at `model_dir` (InputError if unusable) on `engine` and decode `texts` greedily, order
    preserved. `ct2_dir`: an existing CTranslate2 export of it (else one is made for this call)."""
    return load_engine(engine, model_dir, ct2_dir).decode(texts, batch_size=batch_size,
                                                          max_new_tokens=max_new_tokens, progress=True)
