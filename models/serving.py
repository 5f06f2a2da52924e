"""The student as an MLflow `pyfunc` model: what the registry stores and `mlflow models serve` serves.

Why pyfunc and not MLflow's transformers flavour: that flavour saves a transformers *pipeline*, and
transformers 5 removed the seq2seq pipelines (`text2text-generation`, `summarization`); a T5 student has no
pipeline task left. The pyfunc wraps the plain HF model folder (kept verbatim as the `student` artifact, so
`from_pretrained` still works on it) and its CTranslate2 export (the `student_ct2` artifact), and decodes with
the engine named in its model config (models/student/engines.py: the torch path is the greedy decoder the
benchmark scores). Each answer is structured with the scorer's own parser (core/answers.py), so a caller gets
exactly the pairs the registry's F1 counted. It loads with or without fsa-distill installed: the fsa_distill
modules it imports travel with it (tasks/register.py logs them as `code_paths`).
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from fsa_distill.core.answers import structured_answer
from fsa_distill.models.student.engines import load_engine

HF_ARTIFACT = "student"
CT2_ARTIFACT = "student_ct2"


class StudentPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a `text` column (reviews or sentences). Output, per row:
    `{"raw": "<model output>", "targets": [{"aspect" | "category": ..., "polarity": ...}, ...]}`.
    Model config: `task` (atsa | acsa: which element the targets name) and `engine` (torch | ctranslate2)."""

    def load_context(self, context: Any) -> None:
        config = context.model_config or {}
        self.task = config.get("task", "atsa")
        self.engine = load_engine(config.get("engine", "torch"), context.artifacts[HF_ARTIFACT],
                                  context.artifacts.get(CT2_ARTIFACT))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> list[dict[str, Any]]:
        params = params or {}
        texts = ["" if text is None else str(text) for text in model_input["text"]]
        raws = self.engine.decode(texts, batch_size=int(params.get("batch_size", 32)),
                                  max_new_tokens=int(params.get("max_new_tokens", 100)))
        return [structured_answer(raw, self.task, text) for raw, text in zip(raws, texts, strict=True)]


# MLflow "models from code": log_model(python_model=<this file>) executes this file on load, so no pickle.
mlflow.models.set_model(StudentPyfunc())
