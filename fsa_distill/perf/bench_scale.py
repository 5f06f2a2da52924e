"""Scale: does the pipeline hold a paper-sized corpus (2M pairs) on one machine's memory, at full speed?

Parts, each measured in a subprocess of its own so that its peak RSS is its own (`--part generation|training|all`):
- generation: N answers of a synthetic teacher (instant, always valid: the pipeline is measured, not a model)
  go through the real generate stage (`tasks.stages.generate.generate_responses`: lazy job plan, validation,
  the SQLite answer store, the Arrow dataset writer), then the real corpus stage
  (`tasks.stages.corpus.build_corpus`) builds the corpus from that dataset. Reports `answers`, `store_write_s`
  (time inside the store's commits), `dataset_build_s` (generation dataset from the store), `corpus_build_s`,
  and the process's peak RSS (`generation_peak_rss_gib`, VmHWM, memory-mapped pages included;
  `generation_peak_anonymous_rss_gib`).
- training: a synthetic corpus of N (review, response) pairs is written as a corpus-stage dataset (Arrow, in
  chunks, by `Dataset.from_generator`; not timed, and done in its own subprocess too), then one training
  subprocess tokenizes it with `models.student.tokenized` (`tokenize_s`) and pretrains the same student with
  the same batch for `steps` steps on it and on a 20,000-pair corpus (`train_steps_per_s_large` / `_small`,
  the steps alternating in blocks so load changes on the shared machine hit both alike), reporting its own
  peak RSS (`training_peak_rss_gib`, VmHWM: tokenization included, and the memory-mapped corpus pages it
  touched; `training_peak_anonymous_rss_gib`: heap and tensors only, sampled).
Goals: generation_peak_rss_gib < 2; training_peak_rss_gib < 3 and large ≥ 0.9 × small steps/s. Writes
docs/results/scale.json (each part's result replaces only that part's entry).

    fsa-distill bench scale --pairs 2000000 --json
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fsa_distill.core.files import write_json_atomically
from fsa_distill.perf import RESULTS_DIR

RESULTS_PATH = RESULTS_DIR / "scale.json"
SMALL_PAIRS = 20_000
WORDS = ["food", "service", "staff", "pizza", "pasta", "wine", "battery", "screen", "keyboard", "price",
         "view", "ambience", "dessert", "menu", "waiter", "table", "room", "bed", "location", "quality", "taste",
         "portion", "drinks", "music", "noise", "delivery", "support", "display", "sound"]
MOODS = ["great", "awful", "fine", "slow", "friendly", "bright", "cold", "warm", "rude", "lovely", "bland",
         "fresh", "overpriced", "cheap", "noisy", "quiet", "excellent", "terrible", "decent", "amazing"]


def synthetic_rows(n_pairs: int, seed: int):
    """Review → analysis pairs of varied length (reviews 5-60 words, responses 10-140), made on the fly."""
    import random

    rng = random.Random(seed)
    for index in range(n_pairs):
        words = [rng.choice(WORDS) if i % 3 else rng.choice(MOODS) for i in range(rng.randint(5, 60))]
        review = " ".join(words).capitalize() + "."
        targets = [f'Opinion Target {k + 1}: "{rng.choice(WORDS)}"[NL]Sentiment: {rng.choice(["Positive", "Negative", "Neutral"])}[NL]Reasoning: the review says {rng.choice(MOODS)}.'
                   for k in range(rng.randint(1, 7))]
        yield {"id": str(index), "source": review, "target": "[NL]".join(targets), "prompt": "analysis"}


def write_corpus(n_pairs: int, out_dir: Path, seed: int = 0) -> Path:
    """A corpus-stage dataset (a `train` split only) with N synthetic pairs, written in chunks."""
    from datasets import Dataset, DatasetDict

    train = Dataset.from_generator(synthetic_rows, gen_kwargs={"n_pairs": n_pairs, "seed": seed},
                                   cache_dir=str(out_dir.parent / "hf-cache"))
    DatasetDict({"train": train}).save_to_disk(str(out_dir))
    (out_dir / "corpus_digest.txt").write_text(f"synthetic-{n_pairs}-{seed}\n", encoding="utf-8")
    return out_dir


def peak_rss_gib() -> float:
    """This process's peak resident set (VmHWM in /proc/self/status): it counts the memory-mapped Arrow pages the
    process has touched too (file-backed, reclaimable), so it is an upper bound of what the part holds. Not
    ru_maxrss: Linux carries that across fork and exec, so a part started by a big process (a test session)
    would report its parent's resident set."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM line in /proc/self/status")


class AnonymousRssPeak:
    """The peak of RssAnon (/proc/self/status: heap and tensors, not file pages), sampled every 50 ms by a
    thread: the memory the process cannot give back, which is what must not grow with the corpus."""

    def __init__(self) -> None:
        import threading

        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.read()

    def read(self) -> int:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))
        return self.peak_kib

    def stop_gib(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.read() / 2**20


def training_part(work: Path, n_pairs: int, steps: int, batch_size: int, student: str) -> dict[str, Any]:
    """Runs inside its own process: tokenize the large corpus, then time training on it and on the small one."""
    import torch

    from fsa_distill.core.config import PretrainConfig
    from fsa_distill.models.student import build_student
    from fsa_distill.models.student.load import load_tokenizer
    from fsa_distill.models.student.tokenized import tokenized_split, tokenizer_digest
    from fsa_distill.tasks.stages.pretrain import pretrain

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    anonymous = AnonymousRssPeak()
    corpora = {"large": work / "corpus-large", "small": work / "corpus-small"}
    texts = [row["source"] for row in synthetic_rows(2000, 1)] + [row["target"] for row in synthetic_rows(2000, 1)]
    student_dir = build_student(student, work / "student", texts, vocab_size=8000)
    tokenizer, key = load_tokenizer(student_dir), tokenizer_digest(student_dir)
    cfg = PretrainConfig(batch_size=batch_size, max_source_length=128, max_target_length=400, eval_every=10**6,
                         checkpoint_every=10**6, log_every=10**6, max_steps=1, bf16="off")
    started = time.perf_counter()
    tokenized_split(corpora["large"], "train", tokenizer, key, 128, 400, work / "tokenized")
    tokenize_s = time.perf_counter() - started
    rss_after_tokenize = peak_rss_gib()

    # Alternate blocks of steps between the corpora (each block a fresh run of `block` steps: the same model
    # and batches every time), so that a change in the shared machine's load hits both alike.
    blocks = 4
    block = max(1, steps // blocks)
    seconds = {name: 0.0 for name in corpora}
    for index in range(blocks):
        for name, corpus in corpora.items():
            result = pretrain(student_dir, corpus, cfg.model_copy(update={"max_steps": block}),
                              work / f"run-{name}-{index}", key="bench", cache_dir=work / "tokenized")
            seconds[name] += result["train_seconds"]
    steps = block * blocks
    return {
        "tokenize_s": round(tokenize_s, 1), "training_peak_rss_gib": round(peak_rss_gib(), 3),
        "training_peak_anonymous_rss_gib": round(anonymous.stop_gib(), 3),
        "peak_rss_after_tokenize_gib": round(rss_after_tokenize, 3),
        "train_steps_per_s_large": round(steps / seconds["large"], 3),
        "train_steps_per_s_small": round(steps / seconds["small"], 3),
        "steps": steps, "batch_size": batch_size, "student": student, "torch_threads": torch.get_num_threads(),
    }


class SyntheticTeacher:
    """An instant teacher whose answers always pass validation: an analysis quoting a word of the review, or a
    rewrite that varies with it. The real stage code runs around it; only the model is left out."""

    model_id = "synthetic-teacher"
    weights_digest = "synthetic"
    max_model_len = 4096
    supports_structured_outputs = False
    streaming = False
    distributed = False

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, max_tokens: int) -> str:
        return " ".join(text.split()[:max_tokens])

    def sampling_key(self, request: Any) -> dict[str, Any]:
        return request.sampling_key()

    def generate(self, requests: list[Any]) -> list[Any]:
        from fsa_distill.models.teacher.base import TeacherAnswer

        results = []
        for request in requests:
            content = request.messages[0]["content"] if request.messages else request.prompt or ""
            review = content.rsplit("Review: ", 1)[-1].split()
            word, mood = review[1].strip(".,"), review[0].strip(".,").lower()
            if content.startswith("Analyze"):
                text = (f'Opinion Target 1: "{word}"\nAspect: "quality"\nSentiment: Positive\n'
                        f"Reasoning: The review calls the {word} {mood}, which is a clear opinion about it.")
            else:
                text = f"In short, the {word} here was {mood}, and the reviewer says so plainly about the visit."
            results.append(TeacherAnswer(text, len(text.split()), "stop"))
        return results

    def close(self) -> None:
        """Nothing to release."""


def synthetic_reviews(n_reviews: int, seed: int):
    """Distinct reviews (a running number keeps every text unique), made on the fly, never held."""
    for row in synthetic_rows(n_reviews, seed):
        yield {"id": row["id"], "text": f"{row['source']} Visit {row['id']}."}


def generation_part(work: Path, n_pairs: int) -> dict[str, Any]:
    """Runs inside its own process: N answers through the generate stage and the store, then the corpus."""
    from fsa_distill.core.config import CorpusConfig, DistillConfig
    from fsa_distill.tasks.stages.corpus import build_corpus
    from fsa_distill.tasks.stages.generate import GenerateSettings, generate_responses

    anonymous = AnonymousRssPeak()
    config = DistillConfig(work_dir=work / "gen-work")
    config.generation.prompts = ["analysis", "rewrite"]
    config.generation.batch_size = 4096  # the teacher is instant: large commits, as a busy GPU teacher makes
    n_reviews = -(-n_pairs // len(config.generation.prompts))
    stats = generate_responses(synthetic_reviews(n_reviews, seed=2), GenerateSettings.of(config), work / "generations",
                               teacher=SyntheticTeacher(), progress=False, work_dir=config.work_dir)  # type: ignore[arg-type]
    rss_after_generate = peak_rss_gib()
    started = time.perf_counter()
    corpus = build_corpus([work / "generations"], work / "gen-corpus", CorpusConfig(dev_fraction=0.01))
    corpus_s = time.perf_counter() - started
    store_bytes = sum(f.stat().st_size for f in (work / "gen-work" / "cache").glob("teacher_responses.sqlite*"))
    return {
        "answers": stats["generated"], "rows": stats["rows"], "reviews": stats["reviews"],
        "plan_s": stats["plan_s"], "store_write_s": stats["store_write_s"], "generate_s": stats["generate_s"],
        "dataset_build_s": stats["dataset_write_s"], "corpus_build_s": round(corpus_s, 1),
        "corpus_train_pairs": corpus["n_train"], "corpus_validation_pairs": corpus["n_validation"],
        "store": "sqlite", "store_gib": round(store_bytes / 2**30, 3),
        "generation_peak_rss_gib": round(peak_rss_gib(), 3),
        "generation_peak_anonymous_rss_gib": round(anonymous.stop_gib(), 3),
        "peak_rss_after_generate_gib": round(rss_after_generate, 3),
    }


def _in_subprocess(function: str, **arguments: Any) -> dict[str, Any]:
    """Run `function` of this module in a fresh interpreter; its last stdout line is its JSON result."""
    code = (f"import json, sys\nfrom pathlib import Path\nfrom fsa_distill.perf import bench_scale\n"
            f"arguments = json.loads(sys.argv[1])\narguments['work'] = Path(arguments['work'])\n"
            f"print(json.dumps(bench_scale.{function}(**arguments)))\n")
    ran = subprocess.run([sys.executable, "-c", code, json.dumps(arguments, default=str)], capture_output=True,
                         text=True, check=False)
    if ran.returncode != 0:
        raise RuntimeError(f"{function} failed: {ran.stderr[-3000:]}")
    return json.loads(ran.stdout.strip().splitlines()[-1])


def _write_corpora(work: Path, n_pairs: int) -> dict[str, Any]:
    started = time.perf_counter()
    write_corpus(n_pairs, work / "corpus-large", seed=0)
    write_corpus(SMALL_PAIRS, work / "corpus-small", seed=1)
    return {"write_corpus_s": round(time.perf_counter() - started, 1)}


PARTS = ("generation", "training")


def run_scale_bench(n_pairs: int = 2_000_000, part: str = "all", steps: int = 40, batch_size: int = 16,
                    student: str = "t5-tiny", work_dir: Path | None = None,
                    results_path: Path | None = RESULTS_PATH) -> dict[str, Any]:
    """The chosen parts, each in its own subprocess; results merged into `results_path` by part."""
    result: dict[str, Any] = {"pairs": n_pairs}
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=work_dir) as temp:
        work = Path(temp)
        if part in ("generation", "all"):
            generation = _in_subprocess("generation_part", work=str(work), n_pairs=n_pairs)
            generation["goals"] = {"generation_peak_rss_gib_lt_2": generation["generation_peak_rss_gib"] < 2}
            generation.update(pairs=n_pairs, load_avg_1m=round(os.getloadavg()[0], 2))
            result["generation"] = generation
        if part in ("training", "all"):
            corpus = _in_subprocess("_write_corpora", work=str(work), n_pairs=n_pairs)
            training = _in_subprocess("training_part", work=str(work), n_pairs=n_pairs, steps=steps,
                                      batch_size=batch_size, student=student)
            training.update(corpus)
            training.update(pairs=n_pairs, load_avg_1m=round(os.getloadavg()[0], 2))
            training["goals"] = {
                "training_peak_rss_gib_lt_3": training["training_peak_rss_gib"] < 3,
                "large_ge_0.9x_small": training["train_steps_per_s_large"]
                >= 0.9 * training["train_steps_per_s_small"]}
            result["training"] = training
    result["machine"] = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                         "platform": platform.platform()}
    if results_path is not None:
        previous = json.loads(Path(results_path).read_text(encoding="utf-8")) if Path(results_path).exists() else {}
        write_json_atomically(Path(results_path), {**previous, **result})
    return result
