"""The two inference engines of a student: `torch` (HF `generate`, models/student/decoding.py) and `ctranslate2`
(CTranslate2, int8 weights on CPUs, float16 on GPUs), behind one `decode(texts)` so `predict`, the benchmark flow,
Ray batch prediction and the served model switch engines with one config key (`student.engine`).

Both decode greedily with the same text convention (`to_model_text` in, `from_model_text` out, inputs cut to
512 tokens), so they differ only by the engine's arithmetic: float32 CTranslate2 gives the torch outputs, int8
may flip a near-tie token (the benchmark flow therefore scores the engine that is served). One rule is
the engines' own: a blank text (nothing but whitespace, so no tokens but </s>) gets "" without decoding, as
CTranslate2 answers an empty source; HF `generate` would make up an answer for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from fsa_distill.models.student.decoding import MAX_SOURCE_LENGTH, greedy_decode
from fsa_distill.models.student.load import load_student, load_tokenizer
from fsa_distill.models.student.respell import finish_outputs
from fsa_distill.models.student.text import from_model_text, to_model_text

ENGINES = ("torch", "ctranslate2")
Engine = Literal["torch", "ctranslate2"]
CT2_MODEL_FILE = "model.bin"


class StudentEngine(Protocol):
    def decode(self, texts: list[str], batch_size: int = 64, max_new_tokens: int = 100,
               min_new_tokens: int = 0, progress: bool = False) -> list[str]:
        """Greedy outputs, in the order of `texts`."""
        ...


def blank_aware(decode_some):
    """Decode only the non-blank texts with `decode_some(texts) -> outputs`; blank ones answer ""."""
    def decode(texts: list[str]) -> list[str]:
        keep = [index for index, text in enumerate(texts) if text.strip()]
        outputs = [""] * len(texts)
        for index, output in zip(keep, decode_some([texts[i] for i in keep]) if keep else [], strict=True):
            outputs[index] = output
        return outputs
    return decode


def ct2_device() -> str:
    """`cuda` where CTranslate2 sees a GPU, else `cpu`."""
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def default_quantization(device: str | None = None) -> str:
    """int8 on CPUs (the fast path there), float16 on GPUs."""
    return "float16" if (device or ct2_device()) == "cuda" else "int8"


def export_ct2(model_dir: str | Path, out_dir: str | Path, quantization: str | None = None) -> Path:
    """Convert an HF student folder into a CTranslate2 model folder (weights quantised as asked).

    The folder is written next to its final place and renamed in, so a crash leaves no half export that a
    later run would take for a finished one.
    """
    import shutil
    import tempfile

    from ctranslate2.converters import TransformersConverter

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        TransformersConverter(str(model_dir)).convert(str(staging / "model"), quantization=quantization
                                                      or default_quantization(), force=True)
        if out.exists():
            shutil.rmtree(out)
        (staging / "model").rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


class TorchEngine:
    """HF `generate` in float32 (models/student/decoding.py)."""

    name = "torch"

    def __init__(self, model_dir: str | Path, device: str | None = None) -> None:
        from fsa_distill.models.student.training import pick_device

        self.model, self.tokenizer = load_student(model_dir, device=device or pick_device())

    def decode(self, texts: list[str], batch_size: int = 64, max_new_tokens: int = 100,
               min_new_tokens: int = 0, progress: bool = False) -> list[str]:
        return blank_aware(lambda some: greedy_decode(
            self.model, self.tokenizer, some, batch_size=batch_size, max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens, progress=progress))(texts)


class CT2Engine:
    """A CTranslate2 export of the student (`export_ct2`), with the HF folder's tokenizer."""

    name = "ctranslate2"

    def __init__(self, ct2_dir: str | Path, tokenizer_dir: str | Path, device: str | None = None,
                 compute_type: str | None = None, threads: int = 0) -> None:
        import ctranslate2

        device = device or ct2_device()
        # compute_type "default" keeps the type the weights were exported in (int8 / float16 / float32).
        self.translator = ctranslate2.Translator(str(ct2_dir), device=device, compute_type=compute_type or "default",
                                                 inter_threads=1, intra_threads=threads)
        self.tokenizer = load_tokenizer(tokenizer_dir)

    def decode(self, texts: list[str], batch_size: int = 64, max_new_tokens: int = 100,
               min_new_tokens: int = 0, progress: bool = False) -> list[str]:
        return blank_aware(lambda some: self._translate(some, batch_size, max_new_tokens, min_new_tokens))(texts)

    def _translate(self, texts: list[str], batch_size: int, max_new_tokens: int, min_new_tokens: int) -> list[str]:
        ids = self.tokenizer([to_model_text(text) for text in texts], max_length=MAX_SOURCE_LENGTH,
                             truncation=True)["input_ids"]
        sources = [self.tokenizer.convert_ids_to_tokens(row) for row in ids]
        # max_batch_size: CTranslate2 sorts the inputs by length and batches them itself (as greedy_decode does).
        results = self.translator.translate_batch(
            sources, max_batch_size=batch_size, beam_size=1, max_decoding_length=max_new_tokens,
            min_decoding_length=min_new_tokens)
        decoded = [self.tokenizer.decode(self.tokenizer.convert_tokens_to_ids(result.hypotheses[0]),
                                         skip_special_tokens=True) for result in results]
        return finish_outputs(self.tokenizer, texts, [from_model_text(text).strip() for text in decoded])


def load_engine(engine: str, model_dir: str | Path, ct2_dir: str | Path | None = None,
                threads: int = 0) -> StudentEngine:
    """The student at `model_dir` on `engine`; for ctranslate2, `ct2_dir` is its export (made in a temporary
    folder when not given)."""
    if engine == "torch":
        return TorchEngine(model_dir)
    if engine != "ctranslate2":
        raise ValueError(f"unknown engine {engine!r}; choose from {list(ENGINES)}")
    if ct2_dir is not None and (Path(ct2_dir) / CT2_MODEL_FILE).exists():
        return CT2Engine(ct2_dir, model_dir, threads=threads)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fsa-ct2-") as temp:  # the translator holds the weights in memory
        return CT2Engine(export_ct2(model_dir, Path(temp) / "model"), model_dir, threads=threads)


def engine_info(engine: Any) -> dict[str, Any]:
    """What a result records about the engine that produced it."""
    if isinstance(engine, CT2Engine):
        return {"engine": "ctranslate2", "compute_type": engine.translator.compute_type,
                "device": engine.translator.device}
    return {"engine": "torch", "dtype": "float32"}
