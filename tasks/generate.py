"""Generate stage: every review × prompt through the teacher, validated, cached per answer, saved as an HF
dataset of accepted answers plus a dataset of rejected attempts with their reasons.

Work is done in chunks of `generation.batch_size`; each chunk's answers are committed to the cache before the
next chunk starts, so a crash keeps finished chunks and a rerun (or a corpus with a few new reviews) only
generates what is missing. The dataset is rebuilt from the cache at the end and swapped in atomically.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsa_distill.models.teacher.base import GenerationRequest, GenerationResult, TeacherBackend
from fsa_distill.models.teacher.prompts import ANSWER_FORMATS, PROMPT_DIR, PromptTemplate, load_prompt
from fsa_distill.tasks.generation_cache import AnswerStore, CacheEntry, cache_key, open_store, store_location
from fsa_distill.tasks.validation import validate_response
from tqdm.auto import tqdm

from fsa_distill.core.config import DistillConfig
from fsa_distill.core.digests import sha256_text
from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_dir

LogMetrics = Callable[[dict[str, float], int | None], None]
Progress = Callable[[int, int], None]  # (answers finished, answers to generate), after every committed batch

REASK_TEMPERATURE = 0.7  # a greedy re-ask would repeat the same answer; a re-ask samples instead
CHAT_TEMPLATE_TOKENS = 48  # allowance for role markers and a default system prompt around the user turn
MIN_REVIEW_TOKENS = 16


@dataclass(frozen=True)
class Job:
    """One review × prompt: what is asked and the cache key of its answer."""

    review_id: str
    review: str
    prompt: PromptTemplate
    request: GenerationRequest
    key: str


def clean_reviews(
    reviews: list[dict[str, Any]], teacher: TeacherBackend, max_tokens: int
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """(id, text) pairs fit for the teacher, and counts of what was skipped or truncated.

    Empty and non-UTF-8 reviews are skipped, over-long ones are cut to the input budget; none is fatal.
    """
    kept: list[tuple[str, str]] = []
    counts: Counter[str] = Counter()
    for index, review in enumerate(reviews):
        text = review.get("text")
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                counts["skipped_not_utf8"] += 1
                continue
        if not isinstance(text, str):
            counts["skipped_empty"] += 1
            continue
        try:
            text.encode("utf-8")  # lone surrogates (from a lenient decode) cannot be sent anywhere
        except UnicodeEncodeError:
            counts["skipped_not_utf8"] += 1
            continue
        text = text.strip()
        if not text:
            counts["skipped_empty"] += 1
            continue
        if teacher.count_tokens(text) > max_tokens:
            text = teacher.truncate(text, max_tokens)
            counts["truncated"] += 1
        kept.append((str(review.get("id", index)), text))
    return kept, counts


def input_budget(config: DistillConfig, teacher: TeacherBackend, prompts: list[PromptTemplate]) -> int:
    """Review tokens that fit: the configured budget, but never past the model's context with the answer."""
    overhead = max(teacher.count_tokens(p.render("")) for p in prompts) + CHAT_TEMPLATE_TOKENS
    room = teacher.max_model_len - config.generation.max_new_tokens - overhead
    budget = min(config.generation.max_input_tokens, room)
    if budget < MIN_REVIEW_TOKENS:
        raise InputError(
            None,
            "teacher.max_model_len",
            f"{teacher.max_model_len} tokens leave no room for a review after the prompt ({overhead}) and "
            f"{config.generation.max_new_tokens} new tokens; raise max_model_len or lower max_new_tokens",
        )
    return budget


def build_jobs(
    reviews: list[tuple[str, str]],
    prompts: list[PromptTemplate],
    config: DistillConfig,
    teacher: TeacherBackend,
    ignore_eos: bool = False,
) -> list[Job]:
    gen = config.generation
    teacher_key = f"{teacher.model_id}@{teacher.weights_digest}"
    constrained = gen.structured_outputs and teacher.supports_structured_outputs
    jobs = []
    for review_id, text in reviews:
        for prompt in prompts:
            request = prompt.request(
                text,
                regex=ANSWER_FORMATS.get(prompt.name) if constrained else None,
                max_tokens=gen.max_new_tokens,
                temperature=gen.temperature,
                top_p=gen.top_p,
                seed=gen.seed,
                ignore_eos=ignore_eos,
            )
            key = cache_key(text, prompt.key, teacher_key, teacher.sampling_key(request))
            jobs.append(Job(review_id, text, prompt, request, key))
    return jobs


def _entry(job: Job, result: GenerationResult, teacher: str, attempt: int, reason: str | None,
           final: bool, seed: int) -> CacheEntry:
    return CacheEntry(
        key=job.key,
        review_digest=sha256_text(job.review),
        prompt=job.prompt.name,
        prompt_version=job.prompt.version,
        teacher=teacher,
        attempt=attempt,
        seed=seed,
        response=result.text,
        n_tokens=result.n_tokens,
        finish_reason=result.finish_reason,
        reason=reason,
        final=final,
    )


def reask_request(request: GenerationRequest) -> GenerationRequest:
    return dataclasses.replace(
        request, seed=request.seed + 1, temperature=request.temperature or REASK_TEMPERATURE
    )


def answer_chunk(
    chunk: list[Job], teacher: TeacherBackend, reask: bool
) -> tuple[list[CacheEntry], Counter[str]]:
    """Ask, validate and (once) re-ask one chunk; returns the cache entries and counters for the stats."""
    counts: Counter[str] = Counter()
    results = teacher.generate([job.request for job in chunk])
    entries, retry = [], []
    for job, result in zip(chunk, results, strict=True):
        counts["tokens"] += result.n_tokens
        reason = validate_response(job.review, job.prompt.name, result)
        final = reason is None or not reask
        entries.append(_entry(job, result, teacher.model_id, 0, reason, final, job.request.seed))
        if not final:
            retry.append(job)
    if retry:
        requests = [reask_request(job.request) for job in retry]
        counts["reasked"] += len(retry)
        for job, request, result in zip(retry, requests, teacher.generate(requests), strict=True):
            counts["tokens"] += result.n_tokens
            reason = validate_response(job.review, job.prompt.name, result)
            counts["recovered"] += reason is None
            entries.append(_entry(job, result, teacher.model_id, 1, reason, True, request.seed))
    return entries, counts


def answer_stream(
    pending: list[Job], teacher: TeacherBackend, reask: bool
) -> Iterator[tuple[list[CacheEntry], Counter[str]]]:
    """Ask, validate and (once) re-ask with no chunk barrier: every micro-batch a replica finishes comes back
    at once as cache entries to commit, and its rejected answers go back into the same stream as re-asks."""
    queue: deque[tuple[Any, GenerationRequest]] = deque(((job, 0), job.request) for job in pending)
    for finished in teacher.generate_stream(queue):  # type: ignore[attr-defined]
        counts: Counter[str] = Counter()
        entries = []
        for (job, attempt), result in finished:
            counts["tokens"] += result.n_tokens
            reason = validate_response(job.review, job.prompt.name, result)
            final = reason is None or not reask or attempt == 1
            seed = job.request.seed if attempt == 0 else reask_request(job.request).seed
            entries.append(_entry(job, result, teacher.model_id, attempt, reason, final, seed))
            if not final:
                counts["reasked"] += 1
                queue.append(((job, 1), reask_request(job.request)))
            else:
                counts["generated"] += 1
                counts["recovered"] += attempt == 1 and reason is None
        yield entries, counts


def _counted(entries: list[CacheEntry], counts: Counter[str], n_jobs: int) -> tuple[list[CacheEntry], Counter[str]]:
    counts["generated"] += n_jobs
    return entries, counts


def _row(job: Job, entry: CacheEntry) -> dict[str, Any]:
    return {
        "review_id": job.review_id,
        "review": job.review,
        "prompt": job.prompt.name,
        "prompt_version": job.prompt.version,
        "response": entry.response,
        "teacher": entry.teacher,
        "valid": entry.valid,
        "reject_reason": entry.reason or "",
        "n_tokens": entry.n_tokens,
    }


def _features() -> Any:
    from datasets import Features, Value

    return Features(
        {
            "review_id": Value("string"),
            "review": Value("string"),
            "prompt": Value("string"),
            "prompt_version": Value("string"),
            "response": Value("string"),
            "teacher": Value("string"),
            "valid": Value("bool"),
            "reject_reason": Value("string"),
            "n_tokens": Value("int32"),
        }
    )


def write_datasets(jobs: list[Job], cache: AnswerStore, out_dir: Path) -> tuple[int, Counter[str]]:
    """Accepted answers at `out_dir`, every rejected attempt at `out_dir/rejected`; swapped in atomically."""
    from datasets import Dataset

    done = cache.lookup(job.key for job in jobs)
    jobs_by_key: dict[str, list[Job]] = {}
    for job in jobs:
        jobs_by_key.setdefault(job.key, []).append(job)
    accepted = [_row(job, done[job.key]) for job in jobs if job.key in done and done[job.key].valid]
    rejected = [_row(job, e) for e in cache.rejected_attempts(jobs_by_key) for job in jobs_by_key[e.key]]
    final_reasons = Counter(done[j.key].reason for j in jobs if j.key in done and not done[j.key].valid)

    with atomic_dir(Path(out_dir)) as temp:
        for table, folder in ((accepted, temp), (rejected, temp / "rejected")):
            columns = {name: [row[name] for row in table] for name in _features()}
            dataset = Dataset.from_dict(columns, features=_features())
            # one shard even when empty: datasets cannot load back an empty dataset saved with zero shards
            dataset.save_to_disk(str(folder), num_shards=1 if not table else None)
    return len(accepted), Counter({str(k): v for k, v in final_reasons.items()})


def generate_responses(
    reviews: list[dict[str, Any]],
    config: DistillConfig,
    out_dir: Path,
    teacher: TeacherBackend | None = None,
    log_metrics: LogMetrics | None = None,
    cache_path: str | Path | None = None,
    progress: bool = True,
    ignore_eos: bool = False,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Answer every review with every configured prompt; returns the run's stats.

    `teacher` defaults to the configured one, started only when something is not cached, closed afterwards.
    The answer store is `cache_path`, else `generation.cache_url`, else `<work_dir>/cache/teacher_responses.sqlite`
    (shared by all runs; a postgresql:// URL is shared by hosts too). `ignore_eos` is
    for benchmarks only (fixed-length answers).
    """
    started = time.perf_counter()
    gen = config.generation
    prompts = [load_prompt(name, prompt_dir=gen.prompt_dir or PROMPT_DIR) for name in gen.prompts]
    owns_teacher = teacher is None
    if teacher is None and gen.engine == "ray":  # replicas start on the first request: cached reruns skip them
        from fsa_distill.models.teacher.ray_backend import RayTeacher

        teacher = RayTeacher(config.teacher, config.work_dir, replicas=config.teacher.replicas,
                             ray_address=gen.ray_address, micro_batch=max(1, gen.batch_size // 4))
    if teacher is None:  # started on the first chunk that needs it: all-cached reruns skip the engine
        from fsa_distill.models.teacher.factory import LazyTeacher

        teacher = LazyTeacher(config.teacher, config.work_dir)
    location = str(cache_path) if cache_path else store_location(config.work_dir, gen.cache_url)
    try:
        budget = input_budget(config, teacher, prompts)
        kept, input_counts = clean_reviews(reviews, teacher, budget)
        jobs = build_jobs(kept, prompts, config, teacher, ignore_eos=ignore_eos)
        with open_store(location) as cache:
            unique = list(dict.fromkeys(job.key for job in jobs))
            cached = cache.lookup(unique)
            pending = list({job.key: job for job in jobs if job.key not in cached}.values())
            counts: Counter[str] = Counter()
            loop_started = time.perf_counter()
            bar = tqdm(total=len(pending), unit="answer", desc="teacher", disable=not progress or not pending)
            if teacher.streaming and pending:
                batches = answer_stream(pending, teacher, gen.reask_rejected)
            else:
                chunks = [pending[i : i + gen.batch_size] for i in range(0, len(pending), gen.batch_size)]
                batches = (_counted(*answer_chunk(chunk, teacher, gen.reask_rejected), len(chunk)) for chunk in chunks)
            for step, (entries, batch_counts) in enumerate(batches):
                cache.record(entries)  # durable before the next batch: a crash keeps this work
                counts.update(batch_counts)
                bar.update(batch_counts["generated"])
                if on_progress is not None:
                    on_progress(counts["generated"], len(pending))
                if log_metrics is not None:
                    elapsed = time.perf_counter() - loop_started
                    log_metrics(
                        {"generated": counts["generated"], "tokens": counts["tokens"],
                         "tokens_per_s": counts["tokens"] / max(elapsed, 1e-9)},
                        step,
                    )
            bar.close()
            loop_s = time.perf_counter() - loop_started
            rows, final_reasons = write_datasets(jobs, cache, Path(out_dir))
    finally:
        if owns_teacher:
            teacher.close()

    out_dir = Path(out_dir)
    stats: dict[str, Any] = {
        "reviews": len(reviews),
        "reviews_used": len(kept),
        "skipped_empty": input_counts["skipped_empty"],
        "skipped_not_utf8": input_counts["skipped_not_utf8"],
        "truncated": input_counts["truncated"],
        "requests": len(jobs),
        "unique_requests": len(unique),
        "generated": counts["generated"],
        "cached": len(cached),
        "cache_hit_rate": len(cached) / len(unique) if unique else 1.0,
        "rows": rows,
        "acceptance_rate": round(rows / len(jobs), 4) if jobs else 0.0,
        "engine": "ray" if teacher.streaming else "local",
        "replica_metrics": teacher.replica_metrics() if hasattr(teacher, "replica_metrics") else {},
        "rejected": sum(final_reasons.values()),
        "rejected_by_reason": dict(sorted(final_reasons.items())),
        "reasked": counts["reasked"],
        "recovered": counts["recovered"],
        "tokens": counts["tokens"],
        "tokens_per_s": counts["tokens"] / loop_s if loop_s > 0 and counts["tokens"] else 0.0,
        "generate_s": round(loop_s, 3),
        "wall_s": round(time.perf_counter() - started, 3),
        "teacher": teacher.model_id,
        "dataset_dir": str(out_dir),
        "rejected_dir": str(out_dir / "rejected"),
        "cache_path": cache.location,
    }
    if log_metrics is not None:
        numeric = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
        numeric.update({f"rejected_{reason}": float(n) for reason, n in final_reasons.items()})
        numeric.update(stats["replica_metrics"])  # throughput per replica (engine=ray)
        log_metrics(numeric, None)
    return stats
