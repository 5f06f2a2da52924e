"""Batched greedy decoding with the student: the one inference path used by fine-tuning, evaluation and the CLI.

Texts are sorted by length before batching (so a batch pads to similar lengths) and the outputs are put back
in input order.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from fsa_distill.models.student.load import load_student


@torch.no_grad()
def generate_with(model, tokenizer, texts: list[str], batch_size: int = 64, max_new_tokens: int = 100,
                  max_source_length: int = 512, progress: bool = True, min_new_tokens: int = 0) -> list[str]:
    """Greedy outputs of an already loaded model, in the order of `texts` (`min_new_tokens`: benchmarks only)."""
    if not texts:
        return []
    model.eval()
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in tokenizer(texts, max_length=max_source_length, truncation=True)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda index: -lengths[index])
    outputs: list[str] = [""] * len(texts)
    bar = tqdm(total=len(texts), desc="predict", unit="text", disable=not progress)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenizer([texts[i] for i in chunk], max_length=max_source_length, truncation=True,
                          padding=True, return_tensors="pt").to(device)
        generated = model.generate(**batch, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
                                   do_sample=False, num_beams=1)
        for index, text in zip(chunk, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            outputs[index] = text.strip()
        bar.update(len(chunk))
    bar.close()
    return outputs


def generate_predictions(model_dir: Path | str, texts: list[str], batch_size: int = 64,
                         max_new_tokens: int = 100) -> list[str]:
    """Load the student at `model_dir` (InputError if unusable) and decode `texts` greedily, order preserved."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_student(model_dir, device=device)
    return generate_with(model, tokenizer, texts, batch_size=batch_size, max_new_tokens=max_new_tokens)
