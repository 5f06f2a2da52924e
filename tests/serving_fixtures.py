"""A tiny student that says something: t5-tiny taught a few ATSA answers until greedy decoding reproduces them.

Shared by the engine, serving and batch-prediction tests: a random student answers "" to everything, which
would let an engine that drops or reorders outputs pass unnoticed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TAUGHT_ATSA = {
    "Great pizza but slow service.": "pizza | positive ; service | negative",
    "Nice screen.": "screen | positive",
    "The wine list was long.": "wine list | neutral",
    "Bad battery, good keyboard.": "battery | negative ; keyboard | positive",
}


@pytest.fixture(scope="session")
def talking_student_dir(tmp_path_factory: pytest.TempPathFactory, tiny_student_dir: Path) -> Path:
    import torch

    from fsa_distill.models.student import load_student
    from fsa_distill.models.student.batching import collate, tokenize_pairs
    from fsa_distill.models.student.decoding import greedy_decode
    from fsa_distill.models.student.training import save_student

    model, tokenizer = load_student(tiny_student_dir)
    sources, targets = list(TAUGHT_ATSA), list(TAUGHT_ATSA.values())
    batch, _ = collate(tokenize_pairs(tokenizer, sources, targets, 64, 64), tokenizer.pad_token_id)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(300):  # poll for the learnt state, checked every 10 steps
        model.eval()  # no dropout: memorising four examples converges quickly
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 10 == 9 and greedy_decode(model, tokenizer, sources, max_new_tokens=24) == targets:
            break
    else:
        pytest.fail("the tiny student did not learn the taught answers in 300 steps")
    return save_student(model, tokenizer, tmp_path_factory.mktemp("talking-student") / "model")
