"""One decoder for every path: the served MLflow model and the scored predictions agree, newlines included."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from fsa_distill.models.student import load_student
from fsa_distill.models.student.batching import collate, tokenize_pairs
from fsa_distill.models.student.decoding import encode_sources, greedy_decode
from fsa_distill.models.student.text import NL_TOKEN, to_model_text
from fsa_distill.models.student.training import save_student
from fsa_distill.tasks.ops.predict import generate_predictions
from fsa_distill.tasks.tracking.register import log_student_model

# A multi-line review whose answer is multi-line: the case where the two decoders used to differ.
TAUGHT = {
    "Great pizza.\nSlow service.": "pizza | positive\nservice | negative",
    "Nice screen.": "screen | positive",
}


@pytest.fixture(scope="module")
def newline_student(tmp_path_factory: pytest.TempPathFactory, tiny_student_dir: Path) -> Path:
    """The tiny student taught TAUGHT until greedy decoding reproduces it: a model that writes `[NL]`."""
    model, tokenizer = load_student(tiny_student_dir)
    sources, targets = zip(*TAUGHT.items(), strict=True)
    examples = tokenize_pairs(tokenizer, [to_model_text(s) for s in sources], [to_model_text(t) for t in targets],
                              64, 64)
    batch, _ = collate(examples, tokenizer.pad_token_id)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(100):  # poll for the learnt state: a handful of steps without dropout is enough
        model.eval()  # no dropout: memorising two examples converges in a few steps
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if greedy_decode(model, tokenizer, list(sources), max_new_tokens=16) == list(targets):
            break
    else:
        pytest.fail("the tiny student did not learn the two examples in 100 steps")
    return save_student(model, tokenizer, tmp_path_factory.mktemp("newline-student") / "model")


def test_newlines_are_encoded_as_the_nl_token(tiny_student_dir: Path) -> None:
    _, tokenizer = load_student(tiny_student_dir)
    encoded = encode_sources(tokenizer, ["Great pizza.\nSlow service."])["input_ids"][0].tolist()
    assert encoded == tokenizer("Great pizza.[NL]Slow service.")["input_ids"]
    assert tokenizer.convert_tokens_to_ids(NL_TOKEN) in encoded


def test_served_pyfunc_and_scored_path_give_the_same_output(tmp_path: Path, newline_student: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("serving", artifact_location=(tmp_path / "artifacts").as_uri())
    model_uri = log_student_model(newline_student, client.create_run(experiment).info.run_id, uri)
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(model_uri)  # what `mlflow models serve` loads

    texts = [*TAUGHT, "The wine list was long.\n\nThe staff friendly.", "ok"]
    from_mlflow = served.predict(pd.DataFrame({"text": texts}), params={"max_new_tokens": 16})
    scored = generate_predictions(newline_student, texts, batch_size=3, max_new_tokens=16)  # predict, benchmark
    model, tokenizer = load_student(newline_student)
    finetune_path = greedy_decode(model, tokenizer, texts, batch_size=2, max_new_tokens=16, max_source_length=512)

    assert [answer["raw"] for answer in from_mlflow] == scored == finetune_path
    assert scored[: len(TAUGHT)] == list(TAUGHT.values())  # newline in, newline out; no "[NL]" left anywhere
    assert not any(NL_TOKEN in output for output in scored)
