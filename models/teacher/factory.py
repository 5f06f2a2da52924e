"""Turn `TeacherConfig` into a backend: resolve the model (built-in name, local folder or hub id) to a path
and a weights digest, then start the configured backend on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsa_distill.core.config import TeacherConfig
from fsa_distill.core.digests import sha256_json, sha256_tree
from fsa_distill.core.errors import InputError
from fsa_distill.models.teacher import smollm2
from fsa_distill.models.teacher.base import GenerationRequest, TeacherAnswer, TeacherBackend, TokenizerMixin

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # what the engine loads: a local folder or a hub id
    model_id: str  # stable name recorded with every response
    weights_digest: str


def weights_digest_of_folder(folder: Path) -> str:
    """Digest of a model folder's weight files: the same weights under another folder name share answers."""
    digests = {pattern: sha256_tree(folder, pattern) for pattern in WEIGHT_PATTERNS if any(folder.glob(pattern))}
    if not digests:
        raise InputError(folder, None, "model folder holds no weight files (*.safetensors, *.bin, *.gguf)")
    return "sha256:" + sha256_json(digests)


def native_bf16_on_cpu() -> bool:
    """True where the CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), not by widening to float32."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def compute_dtype(requested: str) -> str:
    """The dtype the engine runs in. `auto` on a CPU without native bf16 means float32: vLLM's CPU default,
    bfloat16, is emulated there and 3-5x slower (SmolLM2 on a 2-core AVX2 EPYC: 24.9 vs 134.3 tokens/s,
    `fsa-distill bench teacher`). GPUs and explicit dtypes are left to the engine."""
    import torch

    if requested != "auto" or torch.cuda.is_available() or native_bf16_on_cpu():
        return requested
    return "float32"


def resolve_model(teacher: TeacherConfig, work_dir: Path) -> ResolvedModel:
    if teacher.model == smollm2.NAME:
        folder, digest = smollm2.ensure_smollm2(Path(work_dir) / "models")
        return ResolvedModel(str(folder), smollm2.NAME, f"gguf-sha256:{digest}")
    folder = Path(teacher.model).expanduser()
    if folder.is_dir():
        return ResolvedModel(str(folder.resolve()), folder.resolve().name, weights_digest_of_folder(folder))
    if teacher.model.count("/") == 1 and not teacher.model.startswith((".", "/", "~")):
        revision = teacher.revision or "main"
        return ResolvedModel(teacher.model, teacher.model, f"hub:{teacher.model}@{revision}")
    raise InputError(teacher.model, None, "teacher.model is neither the built-in name, a folder nor a hub id")


def build_teacher(teacher: TeacherConfig, work_dir: Path) -> TeacherBackend:
    """The configured backend, ready to generate. Close it (or use `with`) to free the engine."""
    if teacher.backend == "imported":
        from fsa_distill.models.teacher.imported import ImportedTeacher

        return ImportedTeacher(teacher.model, teacher.max_model_len)
    if teacher.backend == "openai":
        from fsa_distill.models.teacher.openai_backend import OpenAIBackend

        if not teacher.base_url:
            raise InputError(None, "teacher.base_url", "the openai backend needs the endpoint URL")
        served_digest = f"served:{teacher.model}@{teacher.revision}" if teacher.revision else None
        return OpenAIBackend(
            teacher.base_url,
            model=teacher.model,
            weights_digest=served_digest,
            api_key_env=teacher.api_key_env,
            max_concurrency=teacher.max_concurrency,
            request_timeout_s=teacher.request_timeout_s,
            max_retries=teacher.max_retries,
            max_model_len=teacher.max_model_len,
        )
    model = resolve_model(teacher, work_dir)
    revision = teacher.revision if model.path == teacher.model else None
    if teacher.backend == "hf":
        from fsa_distill.models.teacher.hf_backend import HFBackend

        return HFBackend(
            model.path,
            model_id=model.model_id,
            weights_digest=model.weights_digest,
            dtype=compute_dtype(teacher.dtype),
            max_model_len=teacher.max_model_len,
            revision=revision,
        )
    from fsa_distill.models.teacher.vllm_backend import VLLMBackend

    return VLLMBackend(
        model.path,
        model_id=model.model_id,
        weights_digest=model.weights_digest,
        dtype=compute_dtype(teacher.dtype),
        max_model_len=teacher.max_model_len,
        gpu_memory_utilization=teacher.gpu_memory_utilization,
        kv_cache_memory_gib=teacher.kv_cache_memory_gib,
        tensor_parallel_size=teacher.tensor_parallel_size,
        enable_prefix_caching=teacher.enable_prefix_caching,
        enforce_eager=teacher.enforce_eager,
        revision=revision,
    )


class LazyTeacher(TokenizerMixin, TeacherBackend):
    """Knows the teacher's identity and tokenizer at once, but starts the engine only on the first
    `generate`: a rerun whose answers are all cached never pays vLLM's start-up (30-90 s)."""

    def __init__(self, teacher: TeacherConfig, work_dir: Path) -> None:
        self.config = teacher
        self.work_dir = Path(work_dir)
        self.max_model_len = teacher.max_model_len
        self.backend: TeacherBackend | None = None
        if teacher.backend in ("openai", "imported"):  # nothing local to load: identity is the declared name
            self.backend = build_teacher(teacher, work_dir)
            self.model_id, self.weights_digest = self.backend.model_id, self.backend.weights_digest
            return
        from transformers import AutoTokenizer

        model = resolve_model(teacher, work_dir)
        self.model_id, self.weights_digest = model.model_id, model.weights_digest
        revision = teacher.revision if model.path == teacher.model else None
        self.tokenizer = AutoTokenizer.from_pretrained(model.path, revision=revision)

    @property
    def supports_structured_outputs(self) -> bool:  # type: ignore[override]
        return self.config.backend in ("vllm", "openai")

    @property
    def started(self) -> bool:
        return self.backend is not None

    def sampling_key(self, request: GenerationRequest) -> dict:
        if self.config.backend == "imported":
            return self.backend.sampling_key(request)
        return super().sampling_key(request)

    def count_tokens(self, text: str) -> int:
        if self.config.backend in ("openai", "imported"):
            return self.backend.count_tokens(text)
        return super().count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        if self.config.backend in ("openai", "imported"):
            return self.backend.truncate(text, max_tokens)
        return super().truncate(text, max_tokens)

    def generate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        if not requests:
            return []
        if self.backend is None:
            self.backend = build_teacher(self.config, self.work_dir)
        return self.backend.generate(requests)

    @property
    def streaming(self) -> bool:  # type: ignore[override]
        return self.config.backend == "vllm"

    def generate_stream(self, queue: Any, **options: Any) -> Any:
        """The vLLM engine's stream (see `VLLMBackend.generate_stream`), started on first use."""
        if self.backend is None:
            self.backend = build_teacher(self.config, self.work_dir)
        return self.backend.generate_stream(queue, **options)  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
