"""The two inference engines agree: CTranslate2 in float32 gives the torch decoder's outputs exactly, int8 the
same answers on what the student learnt; structured answers hold the scorer's pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsa_distill.benchmark.targets import parse_prediction
from fsa_distill.core.answers import structured_answer
from fsa_distill.models.student.engines import CT2Engine, TorchEngine, export_ct2, load_engine
from tests.serving_fixtures import TAUGHT_ATSA

# Taught sentences, unseen ones, a multi-line one, an empty one and one far over the 512-token input.
TEXTS = [*TAUGHT_ATSA, "Slow pizza.\nNice service.", "", "The keyboard " * 2000, "wine"]


@pytest.fixture(scope="module")
def torch_engine(talking_student_dir: Path) -> TorchEngine:
    return TorchEngine(talking_student_dir, device="cpu")


@pytest.mark.parametrize("max_new_tokens", [3, 24])
def test_ct2_float32_equals_torch(tmp_path: Path, talking_student_dir: Path, torch_engine: TorchEngine,
                                  max_new_tokens: int) -> None:
    ct2 = CT2Engine(export_ct2(talking_student_dir, tmp_path / "ct2", "float32"), talking_student_dir, device="cpu")
    expected = torch_engine.decode(TEXTS, batch_size=3, max_new_tokens=max_new_tokens)
    assert any(expected), "the student must say something for the comparison to mean anything"
    assert ct2.decode(TEXTS, batch_size=3, max_new_tokens=max_new_tokens) == expected
    assert expected[TEXTS.index("")] == "", "a blank text has no tokens to answer"


def test_ct2_int8_gives_the_taught_answers(talking_student_dir: Path) -> None:
    engine = load_engine("ctranslate2", talking_student_dir)  # default export: int8 on this CPU
    assert engine.translator.compute_type.startswith("int8")
    assert engine.decode(list(TAUGHT_ATSA), max_new_tokens=24) == list(TAUGHT_ATSA.values())


def test_structured_answer_holds_the_scorers_pairs() -> None:
    raw = "pizza | positive ; waiter | angry ; soup | negative ; a | b | c ; pizza | positive"
    sentence = "The pizza was great, the waiter rude."
    answer = structured_answer(raw, "atsa", sentence)
    assert answer == {"raw": raw, "targets": [{"aspect": "pizza", "polarity": "positive"},
                                              {"aspect": "pizza", "polarity": "positive"}]}
    assert [(t["aspect"], t["polarity"]) for t in answer["targets"]] == parse_prediction(raw, "atsa", sentence)
    acsa = structured_answer("food quality | positive ; service | negative", "acsa", "anything")
    assert acsa["targets"] == [{"category": "food quality", "polarity": "positive"},
                               {"category": "service", "polarity": "negative"}]
    assert structured_answer("", "atsa", "") == {"raw": "", "targets": []}


def test_predict_structured_on_both_engines(tmp_path: Path, talking_student_dir: Path) -> None:
    import json

    from typer.testing import CliRunner

    from fsa_distill.cli.app import app

    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("".join(json.dumps({"id": f"r{i}", "text": text}) + "\n"
                               for i, text in enumerate(TAUGHT_ATSA)), encoding="utf-8")
    outputs = {}
    for engine in ("torch", "ctranslate2"):
        out = tmp_path / f"{engine}.jsonl"
        done = CliRunner().invoke(app, ["predict", "--model", str(talking_student_dir), "--input", str(reviews),
                                        "--out", str(out), "--engine", engine, "--format", "structured", "--json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout.strip().splitlines()[-1])["engine"] == engine
        outputs[engine] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert outputs["torch"] == outputs["ctranslate2"]
    first = outputs["torch"][0]
    assert first == {"id": "r0", "raw": "pizza | positive ; service | negative",
                     "targets": [{"aspect": "pizza", "polarity": "positive"},
                                 {"aspect": "service", "polarity": "negative"}]}


def test_predict_ray_refuses_input_it_cannot_read(tmp_path: Path, talking_student_dir: Path) -> None:
    from tests.cli.test_cli_errors import assert_one_clean_error, cli

    reviews = tmp_path / "reviews.csv"
    reviews.write_text("text\ngood pizza\n", encoding="utf-8")
    done = cli("predict", "--model", talking_student_dir, "--input", reviews, "--out", tmp_path / "out.jsonl",
               "--ray")
    assert_one_clean_error(done, reviews, "--ray reads JSON lines (.jsonl) or Parquet (.parquet)")
    assert not (tmp_path / "out.jsonl").exists()
