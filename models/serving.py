"""The student as an MLflow `pyfunc` model: what the registry stores and `mlflow models serve` serves.

Why pyfunc and not MLflow's transformers flavour: that flavour saves a transformers *pipeline*, and
transformers 5 removed the seq2seq pipelines (`text2text-generation`, `summarization`); a T5 student has no
pipeline task left. The pyfunc wraps the plain HF model folder (kept verbatim as the `student` artifact, so
`from_pretrained` still works on it) and its CTranslate2 export (the `student_ct2` artifact), and decodes with
the engine named in its model config (models/student/engines.py: the torch path is the greedy decoder the
benchmark scores). Each answer is structured with the scorer's own parser (core/answers.py), so a caller gets
exactly the pairs the registry's F1 counted. It loads with or without fsa-distill installed: the fsa_distill
modules it imports travel with it, as the package `fsa_distill_serving` (tasks/tracking/register.py logs them
as `code_paths`, with their imports renamed).
"""

from __future__ import annotations

import math
from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd

from fsa_distill.core.answers import structured_answer
from fsa_distill.core.text_budget import chars_for_tokens, cut_text
from fsa_distill.models.student.decoding import MAX_SOURCE_LENGTH
from fsa_distill.models.student.engines import load_engine

HF_ARTIFACT = "student"
CT2_ARTIFACT = "student_ct2"
# Request limits (docs/operations.md): what one request may ask of the server's memory and time. Reviews are cut
# to the student's input as `predict` cuts them, so a text's size past MAX_TEXT_CHARS costs nothing more.
MAX_TEXTS = 1024
MAX_BATCH_SIZE = 256
MAX_NEW_TOKENS = 512
MAX_TEXT_CHARS = chars_for_tokens(MAX_SOURCE_LENGTH)


def _bad_request(message: str) -> Exception:
    """An MLflow error the scoring server answers with HTTP 400 and this message (no stack trace)."""
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(message)


def _bounded(params: dict[str, Any], name: str, default: int, limit: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
            or not 1 <= value <= limit:
        raise _bad_request(f"{name} must be an integer from 1 to {limit}, got {str(value)[:40]!r}")
    return int(value)


def request_texts(model_input: pd.DataFrame) -> list[str]:
    """The request's texts, each cut to the student's input; a missing column, too many rows, or a text that
    is not a string (null, a number) is a 400."""
    if "text" not in model_input.columns:
        columns = [str(column)[:40] for column in model_input.columns][:10]
        raise _bad_request(f"the input needs a 'text' column (got {columns})")
    if len(model_input) > MAX_TEXTS:
        raise _bad_request(f"at most {MAX_TEXTS} texts per request, got {len(model_input)}")
    texts = list(model_input["text"])
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            got = "null" if _is_null(text) else type(text).__name__
            raise _bad_request(f"row {row}: text must be a string, got {got}")
    return [cut_text(text, MAX_TEXT_CHARS) for text in texts]


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))  # pandas: a JSON null may be NaN


class StudentPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a `text` column (reviews or sentences; strings, each cut to the student's input),
    at most MAX_TEXTS rows; params batch_size and max_new_tokens within their bounds. Output, per row:
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
        batch_size = _bounded(params, "batch_size", 32, MAX_BATCH_SIZE)
        max_new_tokens = _bounded(params, "max_new_tokens", 100, MAX_NEW_TOKENS)
        texts = request_texts(model_input)
        raws = self.engine.decode(texts, batch_size=batch_size, max_new_tokens=max_new_tokens)
        return [structured_answer(raw, self.task, text) for raw, text in zip(raws, texts, strict=True)]


# MLflow "models from code": log_model(python_model=<this file>) executes this file on load, so no pickle.
mlflow.models.set_model(StudentPyfunc())
