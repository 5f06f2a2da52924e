"""The student as an MLflow `pyfunc` model: what the registry stores and `mlflow models serve` serves.

Why pyfunc and not MLflow's transformers flavour: that flavour saves a transformers *pipeline*, and
transformers 5 removed the seq2seq pipelines (`text2text-generation`, `summarization`); a T5 student has no
pipeline task left. The pyfunc wraps the plain HF model folder (kept verbatim as the `student` artifact, so
`from_pretrained` still works on it) and decodes with the project's own greedy decoder, the one the benchmark
scores, so the served model and the scores agree (tests/test_student_decoding.py checks it). It therefore loads
in an environment where fsa-distill is installed (`mlflow models serve --env-manager local`).
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from fsa_distill.models.student.decoding import greedy_decode
from fsa_distill.models.student.load import load_student
from fsa_distill.models.student.training import pick_device


class StudentPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a `text` column (reviews or sentences). Output: one prediction per row."""

    def load_context(self, context: Any) -> None:
        self.model, self.tokenizer = load_student(context.artifacts["student"], device=pick_device())

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        params = params or {}
        return greedy_decode(self.model, self.tokenizer, [str(text) for text in model_input["text"]],
                             batch_size=int(params.get("batch_size", 32)),
                             max_new_tokens=int(params.get("max_new_tokens", 100)))


# MLflow "models from code": log_model(python_model=<this file>) executes this file on load, so no pickle.
mlflow.models.set_model(StudentPyfunc())
