"""Load a student folder (or hub id) and fail with an InputError that names the folder when it is unusable.

Every stage after `build_student` goes through `load_student`, so a missing file, a corrupt config, or a
decoder-only checkpoint (GPT-2, Llama, ...) passed by mistake is reported once, in one place, clearly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fsa_distill.core.errors import InputError
from fsa_distill.core.paths import is_local_spec

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


def check_student_dir(model_dir: str | Path) -> Path:
    """Validate a local student folder without loading weights; return it as a Path or raise InputError."""
    folder = Path(model_dir).expanduser()
    if not folder.exists():
        raise InputError(folder, None, "model folder not found")
    if not folder.is_dir():
        raise InputError(folder, None, "expected a model folder (with config.json), got a file")
    config_path = folder / "config.json"
    if not config_path.exists():
        raise InputError(folder, None, "no config.json: not a Hugging Face model folder")
    try:
        config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(config_path, None, f"corrupt config.json: {error}") from None
    if not isinstance(config, dict):
        raise InputError(config_path, None, "corrupt config.json: top level is not an object")
    model_type = config.get("model_type", "unknown")
    if not config.get("is_encoder_decoder", False):
        raise InputError(
            folder, None,
            f"is a {model_type!r} checkpoint ({', '.join(config.get('architectures') or ['decoder-only'])}); "
            "the student must be a seq2seq encoder-decoder model such as T5",
        )
    if not any((folder / name).exists() for name in WEIGHT_FILES):
        raise InputError(folder, None, f"no model weights (expected one of {', '.join(WEIGHT_FILES)})")
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise InputError(folder, None, "no tokenizer files (tokenizer.json / spiece.model)")
    return folder


def load_tokenizer(model_dir: str | Path):
    """The student's tokenizer; local folders are validated first."""
    from transformers import AutoTokenizer

    source = str(check_student_dir(model_dir)) if is_local_spec(model_dir) else str(model_dir)
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as error:  # noqa: BLE001 - any loader failure is a bad model folder to the user
        raise InputError(source, "tokenizer", f"cannot load the tokenizer: {error}") from None


# The config keys that hold a dropout rate, across the seq2seq families a student can be (BART, T5, ...).
DROPOUT_KEYS = ("dropout", "attention_dropout", "activation_dropout", "dropout_rate")


def load_student(model_dir: str | Path, device: str = "cpu", dtype: Any = None, dropout: float | None = None):
    """(model, tokenizer) in eval mode on `device`; float32 unless `dtype` is given (exact-resume relies on it).
    `dropout` replaces every dropout rate the model's config has (None: the checkpoint's own)."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    local = is_local_spec(model_dir)
    source = str(check_student_dir(model_dir)) if local else str(model_dir)
    try:
        config = AutoConfig.from_pretrained(source)
    except Exception as error:  # noqa: BLE001
        raise InputError(source, "config.json", f"cannot read the model config: {error}") from None
    if not getattr(config, "is_encoder_decoder", False):
        raise InputError(source, None, f"is a {config.model_type!r} checkpoint; the student must be a "
                                       "seq2seq encoder-decoder model such as T5")
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, dropout)
    tokenizer = load_tokenizer(source)
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(source, config=config, dtype=dtype or torch.float32)
    except Exception as error:  # noqa: BLE001
        raise InputError(source, "weights", f"cannot load the model weights: {error}") from None
    model.to(device)
    model.eval()
    return model, tokenizer


def model_digest(model_dir: str | Path) -> str:
    """Digest of a student's config and weights: part of the cache keys of the stages that start from it."""
    from fsa_distill.core.digests import sha256_file, sha256_json

    if not is_local_spec(model_dir):
        return str(model_dir)  # a hub id: its revision is what the user named
    folder = check_student_dir(model_dir)
    files = [folder / "config.json"] + [folder / name for name in WEIGHT_FILES if (folder / name).exists()]
    return sha256_json([sha256_file(path) for path in files])
