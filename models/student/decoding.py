"""Greedy decoding of the student: the one inference path of fine-tuning's scoring, `predict`, zero-shot, the
benchmark flow and the served MLflow model (models/serving.py).

Newlines are handled here and only here: inputs go through `to_model_text` (a newline becomes `[NL]`, as in the
pretraining corpus) and outputs through `from_model_text` (`[NL]` back to a newline). So the registered model
and the scored predictions agree for every input, including multi-line reviews. An uncased student's aspect terms
get the review's own spelling back here too (respell.py).
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from fsa_distill.models.student.respell import finish_outputs
from fsa_distill.models.student.text import from_model_text, to_model_text

MAX_SOURCE_LENGTH = 512  # T5's input length: longer inputs are cut, as the student never saw them in training


def encode_sources(tokenizer: Any, texts: list[str], max_length: int = MAX_SOURCE_LENGTH) -> Any:
    """A padded batch of encoder inputs (torch tensors) for raw texts, newlines as `[NL]`."""
    # No token_type_ids: a BERT tokenizer makes them, and seq2seq models (BART, T5) take none.
    return tokenizer([to_model_text(text) for text in texts], max_length=max_length, truncation=True,
                     padding=True, return_tensors="pt", return_token_type_ids=False)


@torch.no_grad()
def greedy_decode(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 64, max_new_tokens: int = 100,
                  max_source_length: int = MAX_SOURCE_LENGTH, progress: bool = False,
                  min_new_tokens: int = 0, desc: str = "predict") -> list[str]:
    """Greedy outputs of a loaded student, in the order of `texts` (`min_new_tokens`: benchmarks only).

    Texts are sorted by length before batching (so a batch pads to similar lengths) and the outputs are put
    back in input order; padding is masked, so a text's output does not depend on its batch.
    """
    if not texts:
        return []
    model.eval()
    device = next(model.parameters()).device
    model_texts = [to_model_text(text) for text in texts]
    lengths = [len(ids) for ids in tokenizer(model_texts, max_length=max_source_length, truncation=True)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda index: -lengths[index])
    outputs: list[str] = [""] * len(texts)
    bar = tqdm(total=len(texts), desc=desc, unit="text", disable=not progress)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = encode_sources(tokenizer, [texts[i] for i in chunk], max_source_length).to(device)
        generated = model.generate(**batch, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
                                   do_sample=False, num_beams=1)
        for index, text in zip(chunk, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            outputs[index] = from_model_text(text).strip()
        bar.update(len(chunk))
    bar.close()
    return finish_outputs(tokenizer, texts, outputs)
