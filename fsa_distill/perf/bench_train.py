"""Student performance: pretraining throughput with dynamic padding vs the paper code's fixed max-length padding,
and student vs teacher inference speed on the same reviews.

Padding, on two corpora in one run, each with its own student (the configured size, tokenizer trained on that
corpus as the pipeline does) and the paper's lengths (128 / 400), batch size 16:
- pipeline (headline): what the demo pipeline really trains on: `n_pipeline_reviews` rest14 training sentences
  answered by the offline teacher (SmolLM2 via vLLM) with both prompts through
  `tasks.stages.generate.generate_responses` (the demo profile's generation settings, per-review cache under
  `<work-dir>/bench-train/cache/`, so a rerun skips the teacher's work), then
  `tasks.stages.corpus.build_corpus`;
- mixtral: the 496 real Mixtral responses to long Yelp/Amazon reviews in ../shared (the held-out set).
Within a corpus, every mode trains a fresh copy of the same initial student on the same examples (whole epochs,
at least `min_steps` steps), with the same training step as `tasks.stages.pretrain.pretrain` (forward,
backward, clip, AdamW); one warm-up step per mode is not timed, and the modes take their steps in turn so that
load changes on the shared machine hit all of them alike. Only real (non-pad) source + target tokens count as
tokens, and they are the same for every mode, so the ratio is useful work per second. Modes:
- fixed: random batches, every batch padded to 128 / 400 (the paper's code);
- dynamic: what `pretrain` does: length-grouped batches, each padded to its own longest source and target;
- dynamic_same_batches: fixed's exact batches, padded dynamically (the gain of padding alone, no grouping).

Inference: the same benchmark sentences (rest14 test) decoded greedily by the student (`tasks.ops.predict.
generate_with`) and answered by the teacher (the same vLLM engine, the teacher baseline's few-shot extraction
prompt). Each side runs at its best batching: vLLM schedules all reviews together, and each student size
is timed with length-sorted batches of 64 and with all reviews in one batch, the faster counting
(`student_batch_size` fixes one). t5-tiny is bound by per-step overhead and is fastest in one batch; t5-small
is fastest in batches of 64. The student's sub-second runs are timed 3 times (median); the teacher's once (a
rerun would hit vLLM's prefix cache). Both are forced to produce exactly `output_tokens` new tokens (min = max,
ignore_eos), so an undertrained student that never stops and a teacher that stops early do equal output work. The headline student
is the demo profile's (`student.model`); every offline size is timed too (speed depends on size, not weights).
Model loading / engine start-up is timed separately and not counted.

Threads: by default the student computes on as many cores as vLLM's CPU worker does for the teacher
(`models.teacher.vllm_backend.cpu_worker_cores`: both cores of a 2-core machine, else all but the one vLLM
keeps for its scheduler), so both sides get the same hardware; `--threads 1` gives steadier timings on a busy
shared machine. The teacher engine is closed before any student timing. Writes
docs/results/train.json.

    fsa-distill bench train --json
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fsa_distill.core.files import write_json_atomically
from fsa_distill.perf import RESULTS_DIR

RESULTS_PATH = RESULTS_DIR / "train.json"
HELDOUT = Path("..") / "shared" / "teacher_outputs" / "mixtral_500.jsonl"  # from the working directory
PADDING_MODES = ("fixed", "dynamic", "dynamic_same_batches")


def demo_config(work_dir: Path):
    """The demo profile (environment ignored), its work dir moved under the bench's own folder."""
    from fsa_distill.core.config import resolve_config

    config = resolve_config("demo", environ={})
    return config.model_copy(update={"work_dir": Path(work_dir) / "bench-train"})


def mixtral_pairs(n_examples: int) -> list[tuple[str, str]]:
    """(review, teacher response) pairs: the real Mixtral outputs shipped in ../shared."""
    from fsa_distill.core.errors import InputError

    if not HELDOUT.is_file():
        raise InputError(HELDOUT, None, "needs ../shared/teacher_outputs/mixtral_500.jsonl")
    rows = [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    return [(row["Text"], row["mixtral_response"]) for row in rows[:n_examples]]


def corpus_from_pairs(pairs: list[tuple[str, str]], work: Path) -> Path:
    """A corpus-stage dataset (all train) from ready (review, response) pairs."""
    from datasets import Dataset

    from fsa_distill.core.config import CorpusConfig
    from fsa_distill.tasks.stages.corpus import build_corpus

    generations = work / "generations"
    Dataset.from_list([{"review_id": str(i), "review": review, "prompt": "bench", "response": response,
                        "valid": True} for i, (review, response) in enumerate(pairs)]).save_to_disk(str(generations))
    build_corpus([generations], work / "corpus", CorpusConfig(dev_fraction=0.0))
    return work / "corpus"


def pipeline_corpus(config, teacher, n_reviews: int, work: Path) -> tuple[Path, dict[str, Any]]:
    """The distillation corpus as the pipeline makes it: rest14 train sentences → teacher (all configured
    prompts, validated, cached) → `build_corpus` (all train, so every pair is trained on)."""
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.core.config import CorpusConfig
    from fsa_distill.tasks.stages.corpus import build_corpus
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

    seen: dict[str, dict[str, str]] = {}
    for sentence in load_sentences("atsa", "rest14", "train", config.data.data_dir):
        text = sentence["sentence"].strip()
        if text and text not in seen and len(seen) < n_reviews:
            seen[text] = {"id": str(sentence.get("ID", len(seen))), "text": text}
    stats = generate_responses(list(seen.values()), GenerateSettings.of(config), work / "generations",
                               teacher=teacher, progress=False, work_dir=config.work_dir)
    build_corpus([work / "generations"], work / "corpus", CorpusConfig(dev_fraction=0.0))
    keep = ("reviews_used", "requests", "rows", "rejected", "rejected_by_reason", "generated", "cached", "tokens",
            "tokens_per_s", "generate_s")
    return work / "corpus", {key: stats[key] for key in keep}


def make_trainer(student_dir: Path, examples: list, pad_to: tuple[int, int] | None, cfg):
    """A fresh copy of the student with its optimizer, and its training step on a batch of example indices:
    `tasks.stages.pretrain.pretrain`'s step (collate, forward, backward, clip, AdamW step), returning
    (real tokens, padded tokens, loss)."""
    import torch

    from fsa_distill.models.student.batching import collate
    from fsa_distill.models.student.load import load_student
    from fsa_distill.models.student.training import pick_device, seed_everything
    from fsa_distill.tasks.stages.pretrain import autocast_context, make_optimizer

    device = pick_device()
    seed_everything(cfg.seed)
    model, tokenizer = load_student(student_dir, device=device)
    optimizer = make_optimizer(model, cfg)
    model.train()

    def step(indices: list[int]) -> tuple[int, int, float]:
        batch, n_real = collate([examples[i] for i in indices], tokenizer.pad_token_id, pad_to)
        batch = {key: value.to(device) for key, value in batch.items()}
        optimizer.zero_grad(set_to_none=True)
        with autocast_context(cfg, device):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        return n_real, batch["input_ids"].numel() + batch["labels"].numel(), loss.item()

    return step


def bench_padding(student_dir: Path, corpus_dir: Path, batch_size: int, max_source: int, max_target: int,
                  min_steps: int = 20, seed: int = 42) -> dict[str, Any]:
    """Tokens/s of fixed vs dynamic padding on one corpus, one student, the same examples (whole epochs).

    Each mode trains its own fresh copy of the student; one untimed warm-up step each (its first batch), then
    the modes take their timed steps in turn (step i of every mode, then step i + 1, ...), so load changes on
    the shared machine hit every mode alike."""
    from fsa_distill.core.config import PretrainConfig
    from fsa_distill.models.student.batching import epoch_batches, tokenize_pairs
    from fsa_distill.models.student.load import load_student
    from fsa_distill.tasks.stages.pretrain import load_corpus_split

    cfg = PretrainConfig(batch_size=batch_size, max_source_length=max_source, max_target_length=max_target,
                         seed=seed)
    _, tokenizer = load_student(student_dir, device="cpu")
    sources, targets = load_corpus_split(corpus_dir, "train")
    examples = tokenize_pairs(tokenizer, sources, targets, max_source, max_target)
    lengths = [(len(tgt), len(src)) for src, tgt in examples]
    n_epochs = math.ceil(min_steps / math.ceil(len(examples) / batch_size))
    plain = [b for epoch in range(n_epochs) for b in epoch_batches(lengths, batch_size, seed, epoch, False)]
    grouped = [b for epoch in range(n_epochs) for b in epoch_batches(lengths, batch_size, seed, epoch, True)]
    plans = {"fixed": (plain, (max_source, max_target)), "dynamic": (grouped, None),
             "dynamic_same_batches": (plain, None)}
    steps = {mode: make_trainer(student_dir, examples, pad_to, cfg) for mode, (_, pad_to) in plans.items()}
    for mode, (batches, _) in plans.items():
        steps[mode](batches[0])  # warm-up: first-call allocations, not timed
    runs = {mode: {"real_tokens": 0, "padded_tokens": 0, "seconds": 0.0, "loss": 0.0} for mode in plans}
    load_before = os.getloadavg()[0]
    for index in range(len(plain)):
        for mode, (batches, _) in plans.items():
            started = time.perf_counter()
            n_real, n_padded, loss = steps[mode](batches[index])
            run = runs[mode]
            run["seconds"] += time.perf_counter() - started
            run["real_tokens"] += n_real
            run["padded_tokens"] += n_padded
            run["loss"] = loss
    assert len({run["real_tokens"] for run in runs.values()}) == 1, "modes must train on the same tokens"
    speed = {mode: run["real_tokens"] / run["seconds"] for mode, run in runs.items()}
    result: dict[str, Any] = {
        "ratio": round(speed["dynamic"] / speed["fixed"], 2),
        "ratio_same_batches": round(speed["dynamic_same_batches"] / speed["fixed"], 2),
    }
    for mode, run in runs.items():
        result[f"{mode}_tokens_per_s"] = round(speed[mode], 1)
        result[f"{mode}_padding_fraction"] = round(1 - run["real_tokens"] / run["padded_tokens"], 3)
    src_lengths, tgt_lengths = sorted(n for _, n in lengths), sorted(n for n, _ in lengths)
    result.update({
        "seconds": {mode: round(run["seconds"], 2) for mode, run in runs.items()},
        "final_train_loss": {mode: round(run["loss"], 4) for mode, run in runs.items()},
        "n_examples": len(examples), "real_tokens": runs["fixed"]["real_tokens"], "steps": len(plain),
        "epochs": n_epochs, "batch_size": batch_size, "max_source_length": max_source,
        "max_target_length": max_target,
        "source_tokens": {"mean": round(sum(src_lengths) / len(src_lengths), 1),
                          "median": src_lengths[len(src_lengths) // 2], "max": src_lengths[-1]},
        "target_tokens": {"mean": round(sum(tgt_lengths) / len(tgt_lengths), 1),
                          "median": tgt_lengths[len(tgt_lengths) // 2], "max": tgt_lengths[-1],
                          "truncated": sum(n >= max_target for n in tgt_lengths)},
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # before, after
    })
    return result


def peak_matmul_flops(dtype: str = "float32", sizes: tuple[int, ...] = (256, 512, 1024, 2048), repeats: int = 5,
                      slow_s: float = 0.5) -> float:
    """This machine's best dense matmul FLOP/s in `dtype` with every torch thread, over square sizes up to 2048:
    the peak that MFU divides by, measured in the same run as the training it is compared with. Sizes grow until
    one matmul takes `slow_s`: a CPU without native bf16 runs a 2048³ bf16 matmul in about a minute."""
    import torch

    best = 0.0
    for size in sizes:
        a = torch.randn(size, size, dtype=getattr(torch, dtype))
        b = torch.randn(size, size, dtype=getattr(torch, dtype))
        for _ in range(repeats + 1):  # the first call of a size is its warm-up, and rarely the best
            started = time.perf_counter()
            torch.matmul(a, b)
            elapsed = time.perf_counter() - started
            best = max(best, 2 * size**3 / elapsed)
            if elapsed > slow_s:
                return best
    return best


def _pretrain_command(student_dir: Path, corpus_dir: Path, out: Path, settings: dict[str, Any],
                      processes: int) -> list[str]:
    args = ["-m", "fsa_distill.cli", "pretrain", "--student", str(student_dir), "--corpus", str(corpus_dir),
            "--out", str(out), *[a for k, v in settings.items() for a in ("--set", f"pretrain.{k}={v}")], "--json"]
    if processes == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            *args]


def bench_ddp(student_dir: Path, corpus_dir: Path, work: Path, batch_size: int, max_source: int, max_target: int,
              steps: int = 20, processes: int = 2, repeats: int = 2) -> dict[str, Any]:
    """`fsa-distill pretrain` as one process (every core) and under torchrun as `processes` processes (DDP over
    gloo, one thread each), same global batch, dropout off: tokens/s of each, the largest per-step relative
    loss difference, and MFU (6·N·tokens/s over the matmul peak measured here). The two are run alternately
    `repeats` times and the best of each counts."""
    import subprocess

    import torch

    from fsa_distill.models.student.load import load_student

    config = json.loads((student_dir / "config.json").read_text(encoding="utf-8"))
    dropouts = ("dropout_rate", "dropout", "attention_dropout", "activation_dropout")  # T5's and BART's names
    if any(config.get(name, 0.0) for name in dropouts):  # dropout draws differ between 1 and N processes
        config.update({name: 0.0 for name in dropouts if name in config})
        (student_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
    n_params = sum(p.numel() for p in load_student(student_dir)[0].parameters())
    settings = {"max_steps": steps, "batch_size": batch_size, "max_source_length": max_source,
                "max_target_length": max_target, "checkpoint_every": steps, "eval_every": steps}
    threads = torch.get_num_threads()
    peak = peak_matmul_flops()
    runs: dict[int, dict[str, Any]] = {}
    speeds: dict[int, list[float]] = {1: [], processes: []}
    for repeat in range(repeats):  # alternated, best of each: a busy shared machine slows whichever runs then
        for n in (1, processes):
            out = work / f"ddp-{n}-{repeat}"
            env = {**os.environ, "OMP_NUM_THREADS": str(threads if n == 1 else max(1, threads // n))}
            ran = subprocess.run(_pretrain_command(student_dir, corpus_dir, out, settings, n),
                                 capture_output=True, text=True, env=env, check=False)
            if ran.returncode != 0:
                raise RuntimeError(f"pretrain with {n} process(es) failed: {ran.stderr[-2000:]}")
            runs[n] = json.loads(ran.stdout.strip().splitlines()[-1])
            runs[n]["losses"] = [json.loads(line)["loss"]
                                 for line in (out / "train_log.jsonl").read_text().splitlines()]
            speeds[n].append(runs[n]["tokens_per_s"])
    one, many = runs[1], runs[processes]
    one["tokens_per_s"], many["tokens_per_s"] = max(speeds[1]), max(speeds[processes])
    rel = [abs(a - b) / abs(a) for a, b in zip(one["losses"], many["losses"], strict=True)]
    return {
        "single_process_tokens_per_s": round(one["tokens_per_s"], 1),
        f"ddp_{processes}proc_tokens_per_s": round(many["tokens_per_s"], 1),
        "ddp_speedup": round(many["tokens_per_s"] / one["tokens_per_s"], 2),
        "ddp_loss_max_rel_diff": max(rel), "steps": steps, "global_batch": batch_size,
        "pretrain_mfu": round(6 * n_params * one["tokens_per_s"] / peak, 4),
        "ddp_pretrain_mfu": round(6 * n_params * many["tokens_per_s"] / peak, 4),
        "peak_matmul_gflops": round(peak / 1e9, 1), "n_params": n_params, "torch_threads_single": threads,
        "tokens_per_s_runs": {str(n): [round(v, 1) for v in values] for n, values in speeds.items()},
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "note": "6*N*tokens/s over the best float32 square matmul's (up to 2048^3) FLOP/s with every thread; "
                "6*N overcounts an encoder-decoder (each token passes one stack). Losses: one process vs DDP, "
                "dropout off.",
    }


def bench_student_inference(model_dir: Path, texts: list[str], batch_size: int, output_tokens: int,
                            repeats: int = 3) -> dict[str, Any]:
    from fsa_distill.models.student.decoding import greedy_decode
    from fsa_distill.models.student.load import load_student
    from fsa_distill.models.student.training import pick_device

    started = time.perf_counter()
    model, tokenizer = load_student(model_dir, device=pick_device())
    load_s = time.perf_counter() - started
    greedy_decode(model, tokenizer, texts[:4], batch_size, output_tokens)  # warm-up

    def timed() -> float:
        started = time.perf_counter()
        greedy_decode(model, tokenizer, texts, batch_size, output_tokens, min_new_tokens=output_tokens)
        return time.perf_counter() - started

    seconds = statistics.median(timed() for _ in range(repeats))
    return {"reviews_per_s": round(len(texts) / seconds, 2), "seconds": round(seconds, 2),
            "new_tokens_per_review": output_tokens, "load_s": round(load_s, 2), "batch_size": batch_size,
            "n_params": sum(p.numel() for p in model.parameters())}


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr for a while: vLLM (and its engine subprocess) log to stdout, which must
    carry only the result's JSON line."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def start_teacher(config) -> tuple[Any, str, str | None]:
    """The configured teacher (vLLM), started once; HF generate if vLLM cannot start (noted in the result).
    The converted model is shared with the bench's --work-dir (`work_dir/../models`)."""
    from fsa_distill.models.teacher.factory import build_teacher

    models_root = Path(config.work_dir).parent
    try:
        return build_teacher(config.teacher, models_root), config.teacher.backend, None
    except Exception as error:  # noqa: BLE001 - the benchmark still reports, on the HF path
        fallback = config.teacher.model_copy(update={"backend": "hf", "dtype": "float32"})
        note = f"{config.teacher.backend} backend failed ({type(error).__name__}: {error}); HF generate used"
        return build_teacher(fallback, models_root), "hf", note


def bench_teacher_inference(teacher, texts: list[str], output_tokens: int, data_dir: Path | None = None
                            ) -> dict[str, Any]:
    """The teacher's few-shot extraction on the same texts, forced to `output_tokens` new tokens each."""
    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.tasks.stages.teacher_baseline import extraction_prompt, few_shot_block

    examples = few_shot_block("atsa", load_sentences("atsa", "rest14", "train", data_dir)[:2])
    prompt = extraction_prompt("atsa")
    requests = [prompt.request(t, fields={"examples": examples}, max_tokens=output_tokens, temperature=0.0,
                               ignore_eos=True) for t in texts]
    teacher.generate(requests[:2])  # warm-up
    started = time.perf_counter()
    results = teacher.generate(requests)
    seconds = time.perf_counter() - started
    return {"reviews_per_s": round(len(texts) / seconds, 2), "seconds": round(seconds, 2),
            "new_tokens_per_review": round(sum(r.n_tokens for r in results) / len(texts), 1)}


def _ddp_section(work: Path, config, student: str, n_examples: int, batch_size: int, max_source: int,
                 max_target: int, steps: int) -> dict[str, Any]:
    """The data-parallel comparison on the Mixtral set with `student` (fresh, dropout off)."""
    from fsa_distill.models.student import build_student
    from fsa_distill.tasks.stages.pretrain import load_corpus_split

    corpus_dir = work / "ddp" / "corpus"
    if not corpus_dir.exists():
        corpus_from_pairs(mixtral_pairs(n_examples), work / "ddp")
    sources, targets = load_corpus_split(corpus_dir, "train")
    student_dir = build_student(student, work / "ddp" / "student", sources + targets, config.student.vocab_size)
    result = bench_ddp(student_dir, corpus_dir, work / "ddp", batch_size, max_source, max_target, max(steps, 20))
    result.update({"student": student, "corpus": f"{n_examples} Mixtral responses",
                   "max_source_length": max_source, "max_target_length": max_target,
                   "goal_loss_rel_diff_le_1e-4": result["ddp_loss_max_rel_diff"] <= 1e-4})
    return result


def run_train_bench(n_examples: int = 496, n_pipeline_reviews: int = 200, n_reviews: int = 200,
                    student: str | None = None, work_dir: Path = Path("work"), with_teacher: bool = True,
                    teacher=None, batch_size: int = 16, max_source: int = 128, max_target: int = 400,
                    min_steps: int = 20, output_tokens: int = 32, threads: int | None = None,
                    student_batch_size: int | None = None,
                    sizes: tuple[str, ...] | None = None, results_path: Path | None = RESULTS_PATH,
                    data_dir: Path | None = None, part: str = "all", with_ddp: bool = True) -> dict[str, Any]:
    """Both padding comparisons, the inference comparison and the data-parallel comparison; `teacher`: an
    already started backend to use (not closed here), else the demo profile's is started once when
    `with_teacher`. Without a teacher the pipeline corpus cannot be made: its padding comparison is then null
    and only the Mixtral one is run. `part="ddp"` / `"dtype"`: only the data-parallel comparison / the bf16-vs-float32
    fine-tuning comparison (bench_dtype.py), written into that section of the existing results file (the other
    sections stay from their own run). `with_ddp=False` leaves
    the data-parallel comparison out (`ddp`: null): its four pretraining processes are most of a small run's
    time, which tests about the other sections need not spend."""
    import torch

    from fsa_distill.benchmark.data import load_sentences
    from fsa_distill.models.student import SIZES, build_student
    from fsa_distill.models.teacher.vllm_backend import cpu_worker_cores
    from fsa_distill.tasks.stages.pretrain import load_corpus_split

    torch.set_num_threads(threads or cpu_worker_cores())
    config = demo_config(work_dir)
    if part in ("ddp", "dtype"):
        with tempfile.TemporaryDirectory(prefix=f"bench-{part}-") as temp:
            if part == "ddp":
                section = _ddp_section(Path(temp), config, student or config.student.model, n_examples,
                                       batch_size, max_source, max_target, min_steps)
            else:
                from fsa_distill.perf.bench_dtype import bench_dtype

                section = bench_dtype(student or config.student.model, Path(temp), data_dir)
        if results_path is not None:
            previous = json.loads(Path(results_path).read_text(encoding="utf-8")) if Path(results_path).exists() else {}
            write_json_atomically(Path(results_path), {**previous, part: section})
        return {part: section}
    config.data.data_dir = data_dir
    student = student or config.student.model
    vocab_size = config.student.vocab_size
    sizes = tuple(dict.fromkeys([student, *(SIZES if sizes is None else sizes)]))
    test_sentences = load_sentences("atsa", "rest14", "test", data_dir)
    texts = list(dict.fromkeys(s["sentence"].strip() for s in test_sentences))[:n_reviews]
    teacher_timing: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-train-") as temp:
        work = Path(temp)
        pipeline_dir, generation = None, None
        if with_teacher or teacher is not None:  # teacher work first, then the engine is closed
            owned = teacher is None
            with stdout_to_stderr():
                started = time.perf_counter()
                backend, backend_name, note = start_teacher(config) if owned else (teacher, "given", None)
                startup_s = time.perf_counter() - started
                try:
                    started = time.perf_counter()
                    pipeline_dir, generation = pipeline_corpus(config, backend, n_pipeline_reviews,
                                                               work / "pipeline")
                    generation["wall_s"] = round(time.perf_counter() - started, 1)
                    teacher_timing = bench_teacher_inference(backend, texts, output_tokens, data_dir)
                    teacher_timing.update({"startup_s": round(startup_s, 1), "backend": backend_name,
                                           "model": backend.model_id, "note": note})
                finally:
                    if owned:
                        backend.close()

        corpora = {"mixtral": corpus_from_pairs(mixtral_pairs(n_examples), work / "mixtral")}
        if pipeline_dir is not None:
            corpora["pipeline"] = pipeline_dir
        padding: dict[str, Any] = {}
        student_dirs: dict[str, Path] = {}
        for name, corpus_dir in corpora.items():
            sources, targets = load_corpus_split(corpus_dir, "train")
            student_dirs[name] = build_student(student, work / f"student-{name}", sources + targets, vocab_size)
            padding[name] = bench_padding(student_dirs[name], corpus_dir, batch_size, max_source, max_target,
                                          min_steps)
        ddp = (_ddp_section(work, config, student, n_examples, batch_size, max_source, max_target, min_steps)
               if with_ddp else None)
        # Speed depends on size, not weights (output length is forced); tokenizer: the deployed corpus's.
        tokenizer_texts = load_corpus_split(corpora.get("pipeline", corpora["mixtral"]), "train")
        by_size = {}
        for size in sizes:
            size_dir = build_student(size, work / f"size-{size}", tokenizer_texts[0] + tokenizer_texts[1], vocab_size)
            batches = [student_batch_size] if student_batch_size else sorted({64, len(texts)})
            timings = [bench_student_inference(size_dir, texts, batch, output_tokens) for batch in batches]
            by_size[size] = max(timings, key=lambda timing: timing["reviews_per_s"])
            by_size[size]["reviews_per_s_by_batch_size"] = {
                str(timing["batch_size"]): timing["reviews_per_s"] for timing in timings}
    headline = by_size[student]
    inference: dict[str, Any] = {
        "student": student, "student_reviews_per_s": headline["reviews_per_s"],
        "student_seconds": headline["seconds"], "student_load_s": headline["load_s"],
        "student_batch_size": headline["batch_size"],
        "teacher_reviews_per_s": None, "ratio": None,
    }
    if teacher_timing is not None:
        inference.update({f"teacher_{key}": value for key, value in teacher_timing.items()})
        inference["ratio"] = round(headline["reviews_per_s"] / teacher_timing["reviews_per_s"], 1)
    for timed in by_size.values():
        timed.pop("new_tokens_per_review")
        if teacher_timing is not None:
            timed["ratio_vs_teacher"] = round(timed["reviews_per_s"] / teacher_timing["reviews_per_s"], 1)
    inference.update({"by_student_size": by_size, "n_reviews": len(texts), "output_tokens": output_tokens,
                      "reviews": "rest14 test sentences"})
    pipeline = padding.get("pipeline")
    if pipeline is not None:
        pipeline.update({"corpus": f"{n_pipeline_reviews} rest14 train sentences x prompts "
                                   f"{config.generation.prompts}, teacher {teacher_timing['model']}, "
                                   f"max_new_tokens {config.generation.max_new_tokens}",
                         "generation": generation})
    padding["mixtral"]["corpus"] = f"{n_examples} Mixtral responses from ../shared/teacher_outputs"
    result = {
        "student": student, "n_params": headline["n_params"],
        "pretrain_padding": pipeline, "pretrain_padding_mixtral": padding["mixtral"], "inference": inference,
        "ddp": ddp,
        "goals": {"padding_ratio_ge_2": pipeline["ratio"] >= 2 if pipeline else None,
                  "student_20x_faster": inference["ratio"] >= 20 if inference["ratio"] is not None else None},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg_1m": round(os.getloadavg()[0], 2), "platform": platform.platform(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }
    if results_path is not None:
        write_json_atomically(Path(results_path), result)
    return result


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-examples", type=int, default=496)
    parser.add_argument("--n-pipeline-reviews", type=int, default=200)
    parser.add_argument("--n-reviews", type=int, default=200)
    parser.add_argument("--student", default=None, help="default: the demo profile's student")
    parser.add_argument("--min-steps", type=int, default=20)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="default: as many as the teacher's worker")
    parser.add_argument("--student-batch-size", type=int, default=None, help="default: the faster of 64 and all")
    parser.add_argument("--work-dir", type=Path, default=Path("work"))
    parser.add_argument("--skip-teacher", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run_train_bench(args.n_examples, args.n_pipeline_reviews, args.n_reviews, args.student,
                                     args.work_dir, not args.skip_teacher, min_steps=args.min_steps,
                                     output_tokens=args.output_tokens, threads=args.threads,
                                     student_batch_size=args.student_batch_size)))


if __name__ == "__main__":
    main()
