"""The student as an MLflow `pyfunc` model: what the registry stores and `mlflow models serve` serves.

Why pyfunc and not MLflow's transformers flavour: that flavour saves a transformers *pipeline*, and
transformers 5 removed the seq2seq pipelines (`text2text-generation`, `summarization`); a T5 student has no
pipeline task left. The pyfunc wraps the plain HF model folder (kept verbatim as the `student` artifact, so
`from_pretrained` still works on it) with greedy decoding, the same decoding the benchmark scores.
"""

from __future__ import annotations

from typing import Any

import mlflow.models
import mlflow.pyfunc
import pandas as pd

NEWLINE_TOKEN = "[NL]"


class StudentPyfunc(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a `text` column (reviews or sentences). Output: one raw prediction per row."""

    def load_context(self, context: Any) -> None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        folder = context.artifacts["student"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        import torch

        params = params or {}
        texts = [str(text).replace("\n", NEWLINE_TOKEN) for text in model_input["text"]]
        batch_size = int(params.get("batch_size", 32))
        outputs: list[str] = []
        for start in range(0, len(texts), batch_size):
            encoded = self.tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, truncation=True)
            with torch.inference_mode():
                generated = self.model.generate(**encoded, max_new_tokens=int(params.get("max_new_tokens", 100)), do_sample=False)
            outputs.extend(self.tokenizer.batch_decode(generated, skip_special_tokens=True))
        return [output.replace(NEWLINE_TOKEN, "\n").strip() for output in outputs]


# MLflow "models from code": log_model(python_model=<this file>) executes this file on load, so no pickle.
mlflow.models.set_model(StudentPyfunc())
