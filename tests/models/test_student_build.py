"""Student folders: built offline, loadable with from_pretrained, `[NL]` round trip, clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fsa_distill.cli.app import app
from fsa_distill.core.errors import InputError
from fsa_distill.models.student import (
    NL_TOKEN,
    build_student,
    check_student_dir,
    from_model_text,
    load_student,
    to_model_text,
)


def test_tiny_student_loads_with_auto_classes(tiny_student_dir: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_student_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_student_dir)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert model.config.d_model == 128 and model.config.num_layers == 2 and model.config.num_heads == 4
    assert model.config.vocab_size >= len(tokenizer)
    assert tokenizer("good food").input_ids[-1] == tokenizer.eos_token_id


def test_nl_token_round_trip(tiny_student_dir: Path) -> None:
    _, tokenizer = load_student(tiny_student_dir)
    response = 'Opinion Target 1: "food"\nSentiment: Positive\n\nReasoning: the food was good.'
    ids = tokenizer(to_model_text(response)).input_ids
    nl_id = tokenizer.convert_tokens_to_ids(NL_TOKEN)
    assert nl_id != tokenizer.unk_token_id and ids.count(nl_id) == 3
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert NL_TOKEN in decoded  # [NL] is a normal token: decoding keeps it
    assert from_model_text(decoded) == response


def test_unknown_size_and_missing_folder_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown student"):
        build_student("t5-huge", tmp_path / "out", ["text"], 300)
    with pytest.raises(InputError, match="model folder not found"):
        load_student(tmp_path / "nowhere")


def test_corrupt_and_foreign_checkpoints_are_rejected(tmp_path: Path, tiny_student_dir: Path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="corrupt config.json"):
        check_student_dir(corrupt)

    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(gpt2)
    with pytest.raises(InputError, match="'gpt2' checkpoint.*seq2seq") as caught:
        load_student(gpt2)
    assert str(gpt2) in str(caught.value)

    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_student_dir / "config.json").read_text(), encoding="utf-8")
    with pytest.raises(InputError, match="no model weights"):
        check_student_dir(no_weights)


def test_cli_bad_model_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(gpt2)
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("The food was great.\n", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    out.write_text('{"prediction": "keep me"}\n', encoding="utf-8")
    runner = CliRunner()
    for model in (gpt2, tmp_path / "missing"):
        result = runner.invoke(app, ["predict", "--model", str(model), "--input", str(reviews), "--out", str(out)])
        assert result.exit_code == 2, result.output
        assert str(model) in result.output
    assert out.read_text(encoding="utf-8") == '{"prediction": "keep me"}\n'  # nothing overwritten
    result = runner.invoke(app, ["zeroshot", "--model", str(gpt2), "--task", "atsa", "--dataset", "rest14"])
    assert result.exit_code == 2
    assert not list(tmp_path.glob(".*tmp*"))
