"""Generate stage: every review × prompt through the teacher, validated, cached per answer, saved as an HF
dataset of accepted answers plus a dataset of rejected attempts with their reasons.

Nothing here holds the whole corpus. Jobs are planned lazily, `PLAN_BLOCK` reviews at a time (cleaned, keyed and
looked up in the answer store), and fed to the teacher as it asks for more; answers are committed to the store
as they come back, so a crash keeps everything already answered and a rerun (or a corpus with a few new reviews)
asks only for what the store lacks. The datasets are then written from the store in a second pass over the
plan (an Arrow file, so `reviews` is read only once), block by block, through Arrow writers, with the content
digest computed on the way, and swapped in atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from pydantic import Field
from tqdm.auto import tqdm

from fsa_distill.core.config import DistillConfig, GenerationConfig, TeacherConfig
from fsa_distill.core.digests import sha256_text
from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_dir
from fsa_distill.models.teacher.base import GenerationRequest, TeacherAnswer, TeacherBackend
from fsa_distill.models.teacher.prompts import ANSWER_FORMATS, PROMPT_DIR, PromptTemplate, load_prompt
from fsa_distill.tasks.stages.keys import Placement, StageSettings
from fsa_distill.tasks.stages.records import Reviews, StageResult
from fsa_distill.tasks.stages.stage_task import (
    current_stage_key,
    metrics_logger,
    model_heavy,
    prefect_progress,
    stage_dir,
    stage_task_options,
)
from fsa_distill.tasks.stages.validation import validate_response
from fsa_distill.tasks.store.answers import AnswerStore, StoredAnswer, answer_key, open_store, store_location

LogMetrics = Callable[[dict[str, float], int | None], None]
Progress = Callable[[int, int], None]  # (answers finished, answers to generate), after every committed batch

REASK_TEMPERATURE = 0.7  # a greedy re-ask would repeat the same answer; a re-ask samples instead
CHAT_TEMPLATE_TOKENS = 48  # allowance for role markers and a default system prompt around the user turn
MIN_REVIEW_TOKENS = 16
PLAN_BLOCK = 2048  # reviews planned (cleaned, keyed, looked up) at a time: bounds the jobs held in memory


class GenerateSettings(StageSettings):
    """What asking the teacher reads: the teacher, the generation settings, and the prompt templates' bytes."""

    teacher: TeacherConfig
    generation: GenerationConfig

    @classmethod
    def of(cls, config: DistillConfig) -> GenerateSettings:
        return cls(teacher=config.teacher, generation=config.generation)

    def content(self) -> list[str]:
        """The templates' own digests: a custom `generation.prompt_dir` changes them without changing code."""
        prompt_dir = self.generation.prompt_dir or PROMPT_DIR
        return [load_prompt(name, prompt_dir=prompt_dir).digest for name in self.generation.prompts]


class TeacherAnswersResult(StageResult):
    dataset_dir: Path
    rejected_dir: Path
    cache_path: str  # a SQLite path or the store's URL without its password
    teacher: str
    reviews: int
    reviews_used: int
    skipped_empty: int
    skipped_not_utf8: int
    truncated: int
    requests: int
    unique_requests: int
    generated: int
    cached: int
    cache_hit_rate: float
    rows: int
    acceptance_rate: float = 0.0
    engine: str = "local"
    chunk_barrier: bool = False  # the teacher answered in chunks (each waits for its slowest answer)
    replica_metrics: dict[str, float] = Field(default_factory=dict)
    rejected: int
    rejected_by_reason: dict[str, int]
    reasked: int
    recovered: int
    tokens: int  # completion tokens the teacher generated in this run (answers served from the store: none)
    prompt_tokens: int = 0  # prompt tokens it read for them
    tokens_per_s: float
    generate_s: float
    plan_s: float = 0.0
    store_write_s: float = 0.0
    dataset_write_s: float = 0.0
    wall_s: float


@dataclass(frozen=True)
class Job:
    """One review × prompt: what is asked and the cache key of its answer."""

    review_id: str
    review: str
    prompt: PromptTemplate
    request: GenerationRequest
    key: str


def clean_review(index: int, review: dict[str, Any], teacher: TeacherBackend, max_tokens: int
                 ) -> tuple[tuple[str, str] | None, str | None]:
    """((id, text), note) for one review: None and why when it is skipped, the note "truncated" when it was cut.

    Empty and non-UTF-8 reviews are skipped, over-long ones are cut to the input budget; none is fatal.
    """
    text = review.get("text")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return None, "skipped_not_utf8"
    if not isinstance(text, str):
        return None, "skipped_empty"
    try:
        text.encode("utf-8")  # lone surrogates (from a lenient decode) cannot be sent anywhere
    except UnicodeEncodeError:
        return None, "skipped_not_utf8"
    text = text.strip()
    if not text:
        return None, "skipped_empty"
    note = None
    if teacher.count_tokens(text) > max_tokens:
        text, note = teacher.truncate(text, max_tokens), "truncated"
    return (str(review.get("id", index)), text), note


def clean_reviews(
    reviews: Iterable[dict[str, Any]], teacher: TeacherBackend, max_tokens: int
) -> tuple[list[tuple[str, str]], Counter[str]]:
    """(id, text) pairs fit for the teacher, and counts of what was skipped or truncated (see `clean_review`)."""
    kept: list[tuple[str, str]] = []
    counts: Counter[str] = Counter()
    for index, review in enumerate(reviews):
        pair, note = clean_review(index, review, teacher, max_tokens)
        if note is not None:
            counts[note] += 1
        if pair is not None:
            kept.append(pair)
    return kept, counts


def input_budget(settings: GenerateSettings, teacher: TeacherBackend, prompts: list[PromptTemplate]) -> int:
    """Review tokens that fit: the configured budget, but never past the model's context with the answer."""
    overhead = max(teacher.count_tokens(p.render("")) for p in prompts) + CHAT_TEMPLATE_TOKENS
    room = teacher.max_model_len - settings.generation.max_new_tokens - overhead
    budget = min(settings.generation.max_input_tokens, room)
    if budget < MIN_REVIEW_TOKENS:
        raise InputError(
            None,
            "teacher.max_model_len",
            f"{teacher.max_model_len} tokens leave no room for a review after the prompt ({overhead}) and "
            f"{settings.generation.max_new_tokens} new tokens; raise max_model_len or lower max_new_tokens",
        )
    return budget


def build_jobs(
    reviews: list[tuple[str, str]],
    prompts: list[PromptTemplate],
    settings: GenerateSettings,
    teacher: TeacherBackend,
    ignore_eos: bool = False,
) -> list[Job]:
    """Every review × prompt as a job with its cache key, in review order."""
    return [make_job(review_id, text, prompt, settings, teacher, ignore_eos)
            for review_id, text in reviews for prompt in prompts]


def make_job(review_id: str, text: str, prompt: PromptTemplate, settings: GenerateSettings, teacher: TeacherBackend,
             ignore_eos: bool = False, key: str | None = None) -> Job:
    """One review × prompt job; `key` is its cache key when already known (read back from the plan)."""
    gen = settings.generation
    constrained = gen.structured_outputs and teacher.supports_structured_outputs
    request = prompt.request(
        text,
        regex=ANSWER_FORMATS.get(prompt.name) if constrained else None,
        max_tokens=gen.max_new_tokens,
        temperature=gen.temperature,
        top_p=gen.top_p,
        seed=gen.seed,
        ignore_eos=ignore_eos,
    )
    if key is None:
        key = answer_key(text, prompt.key, f"{teacher.model_id}@{teacher.weights_digest}",
                        teacher.sampling_key(request))
    return Job(review_id, text, prompt, request, key)


def _entry(job: Job, result: TeacherAnswer, teacher: str, attempt: int, reason: str | None,
           final: bool, seed: int) -> StoredAnswer:
    return StoredAnswer(
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
) -> tuple[list[StoredAnswer], Counter[str]]:
    """Ask, validate and (once) re-ask one chunk; returns the cache entries and counters for the stats."""
    counts: Counter[str] = Counter()
    results = teacher.generate([job.request for job in chunk])
    entries, retry = [], []
    for job, result in zip(chunk, results, strict=True):
        counts["tokens"] += result.n_tokens
        counts["prompt_tokens"] += result.n_prompt_tokens
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
            counts["prompt_tokens"] += result.n_prompt_tokens
            reason = validate_response(job.review, job.prompt.name, result)
            counts["recovered"] += reason is None
            entries.append(_entry(job, result, teacher.model_id, 1, reason, True, request.seed))
    return entries, counts


def answer_stream(
    queue: deque[tuple[Any, GenerationRequest]], teacher: TeacherBackend, reask: bool, window: int | None = None
) -> Iterator[tuple[list[StoredAnswer], Counter[str]]]:
    """Ask, validate and (once) re-ask with no chunk barrier: every micro-batch a replica finishes comes back
    at once as cache entries to commit, and its rejected answers go back into the same stream as re-asks.
    `queue` holds ((job, attempt), request) items (a `PlannedQueue` refills itself from the plan)."""
    for finished in teacher.generate_stream(queue, window=window):  # type: ignore[attr-defined]
        counts: Counter[str] = Counter()
        entries = []
        for (job, attempt), result in finished:
            counts["tokens"] += result.n_tokens
            counts["prompt_tokens"] += result.n_prompt_tokens
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


def _counted(entries: list[StoredAnswer], counts: Counter[str], n_jobs: int) -> tuple[list[StoredAnswer], Counter[str]]:
    counts["generated"] += n_jobs
    return entries, counts


def _plan_features() -> Any:
    from datasets import Features, Value

    names = ("review_id", "review", "prompt", "key")
    return Features({**{name: Value("string") for name in names}, "pending": Value("bool")})


class JobPlan:
    """Every review × prompt job of a run, planned lazily into an Arrow file on disk (never a Python list).

    Planning reads the reviews once, `PLAN_BLOCK` at a time: each is cleaned, its jobs keyed and looked up in
    the answer store; a job is `pending` when the store lacks its answer (the first job of a key in its block:
    a text repeated across blocks, which the collect stage never produces, may be asked twice and is still
    stored once). Generation and dataset writing then stream the plan back in blocks, so the number of pending
    answers is known before the first request, for an honest progress bar.
    """

    def __init__(self, folder: Path, prompts: list[PromptTemplate], settings: GenerateSettings,
                 teacher: TeacherBackend, ignore_eos: bool) -> None:
        self.path = Path(folder) / "plan.arrow"
        self.prompts = {prompt.name: prompt for prompt in prompts}
        self.settings, self.teacher, self.ignore_eos = settings, teacher, ignore_eos
        self.counts: Counter[str] = Counter()

    def build(self, reviews: Iterable[dict[str, Any]], store: AnswerStore, budget: int, progress: bool = True) -> None:
        from datasets.arrow_writer import ArrowWriter

        indexed = enumerate(reviews)
        total = len(reviews) if isinstance(reviews, Sized) else None  # a file's reviews stream: count only
        with ArrowWriter(features=_plan_features(), path=str(self.path)) as writer, \
                tqdm(total=total, desc="planning", unit="review", disable=not progress) as bar:
            while block := list(itertools.islice(indexed, PLAN_BLOCK)):
                bar.update(len(block))
                kept = []
                for index, review in block:
                    pair, note = clean_review(index, review, self.teacher, budget)
                    self.counts["reviews"] += 1
                    self.counts[note or "clean"] += 1
                    if pair is not None:
                        kept.append(pair)
                jobs = build_jobs(kept, list(self.prompts.values()), self.settings, self.teacher, self.ignore_eos)
                first = {job.key: job for job in reversed(jobs)}  # the first job of each key
                cached = store.lookup(first)
                pending = [job is first[job.key] and job.key not in cached for job in jobs]
                self.counts.update(reviews_used=len(kept), requests=len(jobs), unique_requests=len(first),
                                   cached=len(cached), pending=sum(pending))
                writer.write_batch({"review_id": [job.review_id for job in jobs],
                                    "review": [job.review for job in jobs],
                                    "prompt": [job.prompt.name for job in jobs],
                                    "key": [job.key for job in jobs], "pending": pending})
            writer.finalize()

    def blocks(self) -> Iterator[list[tuple[Job, bool]]]:
        """(job, pending) in plan order, `PLAN_BLOCK` at a time, read back from the memory-mapped plan."""
        from datasets import Dataset

        plan = Dataset.from_file(str(self.path))
        for batch in plan.iter(batch_size=PLAN_BLOCK):
            yield [(make_job(review_id, review, self.prompts[prompt], self.settings, self.teacher, self.ignore_eos,
                             key=key), pending)  # the key was computed while planning: not hashed again
                   for review_id, review, prompt, key, pending in zip(
                       batch["review_id"], batch["review"], batch["prompt"], batch["key"], batch["pending"],
                       strict=True)]

    def pending(self) -> Iterator[Job]:
        for block in self.blocks():
            yield from (job for job, pending in block if pending)


class PlannedQueue(deque):
    """The stream's work queue, refilled from the plan as the teacher drains it: `generate_stream` pops from
    the left and appends re-asks on the right, and sees at most `low_water` planned jobs at a time."""

    def __init__(self, jobs: Iterator[Job], low_water: int) -> None:
        super().__init__()
        self.jobs, self.low_water = jobs, low_water

    def __len__(self) -> int:
        if super().__len__() < self.low_water and self.jobs is not None:
            for job in itertools.islice(self.jobs, self.low_water):
                self.append(((job, 0), job.request))
            if super().__len__() < self.low_water:
                self.jobs = None  # the plan is exhausted
        return super().__len__()

    def __bool__(self) -> bool:
        return len(self) > 0


def _row(job: Job, entry: StoredAnswer) -> dict[str, Any]:
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


def generation_features() -> Any:
    """The generation dataset's columns (accepted and rejected answers); span corruption writes them too."""
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


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [row[name] for row in rows] for name in generation_features()}


def write_datasets(plan: JobPlan, cache: AnswerStore, out_dir: Path,
                   progress: bool = True) -> tuple[int, Counter[str], str]:
    """Accepted answers at `out_dir`, every rejected attempt at `out_dir/rejected`; swapped in atomically.

    Written block by block from the plan and the store through Arrow writers, so memory does not grow with the
    corpus. Returns the accepted rows, the final rejection reasons and the digest of the accepted
    (review id, prompt, response) rows in plan order.
    """
    from datasets import Dataset
    from datasets.arrow_writer import ArrowWriter

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    digest, accepted, final_reasons = hashlib.sha256(), 0, Counter()
    with tempfile.TemporaryDirectory(prefix=".rows-", dir=out_dir.parent) as temp:
        paths = {"accepted": Path(temp) / "accepted.arrow", "rejected": Path(temp) / "rejected.arrow"}
        with ArrowWriter(features=generation_features(), path=str(paths["accepted"])) as accepted_writer, \
                ArrowWriter(features=generation_features(), path=str(paths["rejected"])) as rejected_writer, \
                tqdm(total=plan.counts["requests"], desc="writing answers", unit="job", disable=not progress) as bar:
            for block in plan.blocks():
                bar.update(len(block))
                jobs = [job for job, _ in block]
                done = cache.lookup([job.key for job in jobs])  # a list: replayable after a reconnect
                jobs_by_key: dict[str, list[Job]] = {}
                for job in jobs:
                    jobs_by_key.setdefault(job.key, []).append(job)
                rows = [_row(job, done[job.key]) for job in jobs if job.key in done and done[job.key].valid]
                for row in rows:
                    digest.update(json.dumps([row["review_id"], row["prompt"], row["response"]],
                                             ensure_ascii=False).encode() + b"\n")
                final_reasons.update(done[job.key].reason for job in jobs
                                     if job.key in done and not done[job.key].valid)
                rejected = [_row(job, entry) for entry in cache.rejected_attempts(jobs_by_key)
                            for job in jobs_by_key[entry.key]]
                accepted += len(rows)
                accepted_writer.write_batch(_columns(rows))
                rejected_writer.write_batch(_columns(rejected))
            accepted_writer.finalize()
            rejected_writer.finalize()
        with atomic_dir(out_dir) as folder:
            for name, target in (("accepted", folder), ("rejected", folder / "rejected")):
                dataset = Dataset.from_file(str(paths[name]))
                # one shard even when empty: datasets cannot load back an empty dataset saved with zero shards
                dataset.save_to_disk(str(target), num_shards=1 if len(dataset) == 0 else None)
                del dataset  # the memory map must close before the temporary folder goes
    return accepted, Counter({str(k): v for k, v in final_reasons.items()}), digest.hexdigest()


def _configured_teacher(settings: GenerateSettings, work_dir: Path) -> TeacherBackend:
    """The configured teacher, started lazily: an all-cached rerun never starts an engine or Ray replicas."""
    if settings.generation.engine == "ray":  # replicas start on the first request
        from fsa_distill.models.teacher.ray_backend import RayTeacher

        return RayTeacher(settings.teacher, work_dir, replicas=settings.teacher.replicas,
                          ray_address=settings.generation.ray_address,
                          micro_batch=max(1, settings.generation.batch_size // 4))
    from fsa_distill.models.teacher.factory import LazyTeacher

    return LazyTeacher(settings.teacher, work_dir)  # started on the first chunk that needs it


def _answer_batches(plan: JobPlan, teacher: TeacherBackend, gen: Any, pending_total: int
                    ) -> Iterator[tuple[list[StoredAnswer], Counter[str]]]:
    """The pending jobs' answers in batches: streamed from an engine that takes requests as others finish, else
    in chunks of `generation.batch_size`."""
    if teacher.streaming and pending_total:
        queue = PlannedQueue(plan.pending(), low_water=max(gen.batch_size, 1))
        # the local engine holds `batch_size` requests at a time; Ray replicas size their own micro-batches
        window = None if teacher.distributed else gen.batch_size
        return answer_stream(queue, teacher, gen.reask_rejected, window=window)
    pending = plan.pending()
    chunks = iter(lambda: list(itertools.islice(pending, gen.batch_size)), [])
    return (_counted(*answer_chunk(chunk, teacher, gen.reask_rejected), len(chunk)) for chunk in chunks)


def _store_answers(batches: Iterable[tuple[list[StoredAnswer], Counter[str]]], store: AnswerStore,
                   pending_total: int, progress: bool, on_progress: Progress | None,
                   log_metrics: LogMetrics | None) -> tuple[Counter[str], float]:
    """Commit each batch of answers before asking for the next (a crash keeps this work), with a progress bar,
    the Prefect progress callback and live metrics; (counts, seconds spent committing)."""
    counts: Counter[str] = Counter()
    store_s, started = 0.0, time.perf_counter()
    bar = tqdm(total=pending_total, unit="answer", desc="teacher", disable=not progress or not pending_total)
    for step, (entries, batch_counts) in enumerate(batches):
        record_started = time.perf_counter()
        store.record(entries)
        store_s += time.perf_counter() - record_started
        counts.update(batch_counts)
        bar.update(batch_counts["generated"])
        if on_progress is not None:
            on_progress(counts["generated"], pending_total)
        if log_metrics is not None:
            elapsed = time.perf_counter() - started
            log_metrics({"generated": counts["generated"], "tokens": counts["tokens"],
                         "tokens_per_s": counts["tokens"] / max(elapsed, 1e-9)}, step)
    bar.close()
    return counts, store_s


def _numeric_stats(stats: dict[str, Any], final_reasons: Counter[str]) -> dict[str, float]:
    """The run's numeric stats as MLflow metrics: rejections per reason and throughput per replica (Ray) too."""
    numeric = {k: float(v) for k, v in stats.items() if isinstance(v, int | float)}
    numeric.update({f"rejected_{reason}": float(n) for reason, n in final_reasons.items()})
    numeric.update(stats["replica_metrics"])
    return numeric


def generate_responses(
    reviews: Iterable[dict[str, Any]],
    settings: GenerateSettings,
    out_dir: Path,
    teacher: TeacherBackend | None = None,
    log_metrics: LogMetrics | None = None,
    cache_path: str | Path | None = None,
    progress: bool = True,
    ignore_eos: bool = False,
    on_progress: Progress | None = None,
    *,
    work_dir: Path,
) -> dict[str, Any]:
    """Answer every review with every configured prompt; returns the run's stats. `reviews` is read once, lazily.
    `teacher` defaults to the configured one, started only when something is not cached. The answer store is
    `cache_path`, else `generation.cache_url`, else `<work_dir>/cache/teacher_responses.sqlite` (shared by all
    runs). `ignore_eos` is for benchmarks only (fixed-length answers)."""
    started, gen = time.perf_counter(), settings.generation
    prompts = [load_prompt(name, prompt_dir=gen.prompt_dir or PROMPT_DIR) for name in gen.prompts]
    owns_teacher = teacher is None
    teacher = _configured_teacher(settings, work_dir) if owns_teacher else teacher
    location = str(cache_path) if cache_path else store_location(work_dir, gen.cache_url)
    (out_dir := Path(out_dir)).parent.mkdir(parents=True, exist_ok=True)
    try:
        budget = input_budget(settings, teacher, prompts)
        with open_store(location) as cache, \
                tempfile.TemporaryDirectory(prefix=".plan-", dir=out_dir.parent) as plan_dir:
            plan_started = time.perf_counter()
            plan = JobPlan(Path(plan_dir), prompts, settings, teacher, ignore_eos)
            plan.build(reviews, cache, budget, progress)
            planned = plan.counts
            loop_started = time.perf_counter()
            counts, store_s = _store_answers(_answer_batches(plan, teacher, gen, planned["pending"]), cache,
                                             planned["pending"], progress, on_progress, log_metrics)
            loop_s = time.perf_counter() - loop_started
            write_started = time.perf_counter()
            rows, final_reasons, digest = write_datasets(plan, cache, out_dir, progress)
            write_s = time.perf_counter() - write_started
    finally:
        if owns_teacher:
            teacher.close()

    requests, unique = planned["requests"], planned["unique_requests"]
    stats: dict[str, Any] = {
        "reviews": planned["reviews"],
        "reviews_used": planned["reviews_used"],
        "skipped_empty": planned["skipped_empty"],
        "skipped_not_utf8": planned["skipped_not_utf8"],
        "truncated": planned["truncated"],
        "requests": requests,
        "unique_requests": unique,
        "generated": counts["generated"],
        "cached": planned["cached"],
        "cache_hit_rate": planned["cached"] / unique if unique else 1.0,
        "rows": rows,
        "acceptance_rate": round(rows / requests, 4) if requests else 0.0,
        "engine": "ray" if teacher.distributed else "local",
        "chunk_barrier": not teacher.streaming,
        "replica_metrics": teacher.replica_metrics() if hasattr(teacher, "replica_metrics") else {},
        "rejected": sum(final_reasons.values()),
        "rejected_by_reason": dict(sorted(final_reasons.items())),
        "reasked": counts["reasked"],
        "recovered": counts["recovered"],
        "tokens": counts["tokens"],
        "prompt_tokens": counts["prompt_tokens"],
        "tokens_per_s": counts["tokens"] / loop_s if loop_s > 0 and counts["tokens"] else 0.0,
        "generate_s": round(loop_s, 3),
        "plan_s": round(loop_started - plan_started, 3),
        "store_write_s": round(store_s, 3),
        "dataset_write_s": round(write_s, 3),
        "wall_s": round(time.perf_counter() - started, 3),
        "teacher": teacher.model_id,
        "dataset_dir": str(out_dir),
        "rejected_dir": str(out_dir / "rejected"),
        "cache_path": cache.location,
        "digest": digest,
    }
    if log_metrics is not None:
        log_metrics(_numeric_stats(stats, final_reasons), None)
    return stats


@task(**stage_task_options("generate", timeout_hours=48))
def generate_stage(reviews: Reviews, settings: GenerateSettings, placement: Placement,
                   tracking_run_id: str | None = None) -> TeacherAnswersResult:
    """Teacher analyses + rewrites every review (per-review cache: only new reviews reach the teacher).
    The reviews are streamed from the collect stage's file and the digest comes from the dataset writer."""
    from fsa_distill.benchmark.importers import iter_review_corpus

    key = current_stage_key()
    out_dir = stage_dir(placement, "generate", key)
    with model_heavy(placement):
        stats = generate_responses(
            iter_review_corpus(reviews.path), settings, out_dir, log_metrics=metrics_logger(placement, tracking_run_id),
            on_progress=prefect_progress(), work_dir=placement.work_dir,
        )
    return TeacherAnswersResult(**stats, trained_in_run=tracking_run_id, key=key)
