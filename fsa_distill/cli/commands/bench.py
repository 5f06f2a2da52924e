"""`fsa-distill bench …`: thin CLI over the modules in fsa_distill/perf/; each prints one JSON line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fsa_distill.cli.console import print_json


def scorer(
    n_pairs: Annotated[int, typer.Option(help="Predicted pairs to score.")] = 1_000_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """Scorer throughput on ~1M pairs vs the paper's quadratic scorer; writes docs/results/scorer.json."""
    from fsa_distill.perf.bench_scorer import RESULTS_PATH, run

    result = run(n_pairs=n_pairs, out_path=RESULTS_PATH if n_pairs >= 1_000_000 else None)
    if as_json:
        print_json(result)
        return
    naive_seconds = result["baseline"]["naive_seconds_extrapolated_to_full"]
    typer.echo(f"scored {result['n_pred_pairs']:,} predicted / {result['n_gold_pairs']:,} gold pairs in "
               f"{result['seconds']} s; the paper's scorer would take ~{naive_seconds} s "
               f"({result['speedup_vs_naive_extrapolated']}x slower)")


def teacher(
    n_prompts: Annotated[int, typer.Option(help="Prompts (half analysis, half rewrite).")] = 128,
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer (forced, for a fair comparison).")] = 200,
    work_dir: Annotated[str, typer.Option(help="Where the converted SmolLM2 teacher is cached.")] = "work",
    compile_graphs: Annotated[bool, typer.Option("--compile", help="Let vLLM compile graphs.")] = False,
    repeats: Annotated[int, typer.Option(help="Alternating direct / pipeline runs; medians are compared.")] = 3,
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder (default: FSA_DATA_DIR, then the "
                                                       "usual search).")] = None,
    engine: Annotated[str, typer.Option(help="local: vLLM vs HF and the pipeline's overhead; ray: the generate "
                                             "stage on engine=ray vs engine=local (results/teacher_ray.json).")
                      ] = "local",
    replicas: Annotated[int, typer.Option(help="Ray replicas (--engine ray); 1 is honest on 2 cores.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """vLLM vs HF generate on the SmolLM2 teacher, plus the pipeline's overhead; writes results/teacher.json."""
    from fsa_distill.cli.console import user_errors
    from fsa_distill.cli.inputs import benchmark_data_dir
    from fsa_distill.core.config import ConfigError
    from fsa_distill.core.paths import check_output_dir
    from fsa_distill.perf.bench_teacher import RESULTS_PATH, run_teacher_bench

    with user_errors():
        check_output_dir(work_dir, "work dir")
        if engine not in ("local", "ray"):
            raise ConfigError(f"--engine {engine!r}: choose local or ray")
        if engine == "ray":
            from fsa_distill.perf.bench_teacher_ray import RESULTS_PATH as RAY_RESULTS
            from fsa_distill.perf.bench_teacher_ray import run_ray_overhead_bench

            result = run_ray_overhead_bench(n_prompts, max_tokens, Path(work_dir), replicas=replicas,
                                            repeats=min(repeats, 2), results_path=RAY_RESULTS,
                                            data_dir=benchmark_data_dir(data_dir))
            if as_json:
                print_json(result)
            else:
                typer.echo(f"local {result['local_pipeline_tokens_per_s']} tok/s, ray "
                           f"{result['ray_pipeline_tokens_per_s']} tok/s ({result['ray_vs_local']}x)")
            return
        result = run_teacher_bench(n_prompts, max_tokens, Path(work_dir), enforce_eager=not compile_graphs,
                                   repeats=repeats, results_path=RESULTS_PATH, data_dir=benchmark_data_dir(data_dir))
    if as_json:
        print_json(result)
        return
    typer.echo(f"vLLM {result['vllm_tokens_per_s']} tok/s, HF generate {result['hf_tokens_per_s']} tok/s "
               f"({result['ratio']}x); pipeline {result['pipeline_tokens_per_s']} tok/s "
               f"({result['pipeline_vs_direct']:.0%} of direct vLLM)")
    if result["dtype_speedup"] is not None:
        typer.echo(f"{result['dtype']} on this CPU: {result['dtype_speedup']}x vLLM's own dtype "
                   f"({result['vllm_own_dtype_tokens_per_s']} tok/s)")
    if result["all_cores_speedup"] is not None:
        typer.echo(f"every core for vLLM's worker: {result['all_cores_speedup']}x one core kept for its scheduler "
                   f"({result['vllm_one_core_reserved_tokens_per_s']} tok/s)")


def train(
    n_examples: Annotated[int, typer.Option(help="Mixtral pairs (../shared held-out set) for the second padding "
                                                  "comparison.")] = 496,
    n_pipeline_reviews: Annotated[int, typer.Option(help="rest14 train sentences answered by the teacher (both "
                                                          "prompts) for the headline padding comparison.")] = 200,
    n_reviews: Annotated[int, typer.Option(help="Reviews decoded by student and teacher.")] = 200,
    student: Annotated[str | None, typer.Option(help="Headline student (default: the demo profile's).")] = None,
    min_steps: Annotated[int, typer.Option(help="Timed pretraining steps per mode, at least (whole epochs).")] = 20,
    output_tokens: Annotated[int, typer.Option(help="New tokens per review, forced for both models.")] = 32,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (default: as many cores as the teacher's "
                                                     "vLLM worker; 1: steadier on a busy machine).")] = None,
    student_batch_size: Annotated[int | None, typer.Option(help="Student decoding batch (default: the faster of "
                                                                "64 and all reviews at once).")] = None,
    work_dir: Annotated[str, typer.Option(help="Teacher model and the bench's generation cache live here.")] = "work",
    skip_teacher: Annotated[bool, typer.Option("--skip-teacher", help="No teacher: Mixtral padding and student "
                                                                       "speed only.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder (default: FSA_DATA_DIR, then the "
                                                       "usual search).")] = None,
    part: Annotated[str, typer.Option(help="all; ddp: only the data-parallel comparison; dtype: only bf16 "
                                           "autocast vs float32 fine-tuning (tokens/s, dev F1, MFU); each written "
                                           "into its section of the results file.")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """Pretraining tokens/s (dynamic vs fixed max-length padding) on the pipeline's teacher corpus and on the
    Mixtral set, student vs teacher inference reviews/s, and 1 process vs 2 DDP processes (tokens/s, loss
    agreement, MFU); writes docs/results/train.json."""
    from fsa_distill.cli.console import user_errors
    from fsa_distill.cli.inputs import benchmark_data_dir
    from fsa_distill.core.errors import InputError
    from fsa_distill.core.paths import check_output_dir
    from fsa_distill.perf.bench_train import RESULTS_PATH, run_train_bench

    with user_errors():
        if part not in ("all", "ddp", "dtype"):
            raise InputError(None, "--part", f"expected all, ddp or dtype, got {part!r}")
        check_output_dir(work_dir, "work dir")
        result = run_train_bench(n_examples=n_examples, n_pipeline_reviews=n_pipeline_reviews, n_reviews=n_reviews,
                                 student=student, work_dir=Path(work_dir), with_teacher=not skip_teacher,
                                 min_steps=min_steps, output_tokens=output_tokens, threads=threads,
                                 student_batch_size=student_batch_size,
                                 results_path=RESULTS_PATH, data_dir=benchmark_data_dir(data_dir), part=part)
    if as_json:
        print_json(result)
        return
    if part == "dtype":
        dtype = result["dtype"]
        for name, run in dtype["runs"].items():
            typer.echo(f"fine-tuning {name}: {run['train_tokens_per_s']} tok/s, dev F1 x 100 {run['dev_f1_x100']}, "
                       f"MFU {run['mfu']:.2%} of {run['peak_matmul_gflops']} GFLOP/s")
        typer.echo(f"bf16 speed-up {dtype['bf16_speedup']}x, dev F1 drop {dtype['dev_f1_drop_x100']}: bf16 is "
                   f"{'' if dtype['bf16_is_cpu_default'] else 'not '}the CPU default")
        return
    ddp = result["ddp"]
    typer.echo(f"pretraining, 1 process vs 2 (DDP, gloo): {ddp['single_process_tokens_per_s']} vs "
               f"{ddp['ddp_2proc_tokens_per_s']} tok/s; max per-step loss difference "
               f"{ddp['ddp_loss_max_rel_diff']:.2e}; MFU {ddp['pretrain_mfu']:.2%}")
    if part == "ddp":
        return
    padding, mixtral, inference = result["pretrain_padding"], result["pretrain_padding_mixtral"], result["inference"]
    if padding is not None:
        typer.echo(f"pretraining (pipeline corpus): dynamic {padding['dynamic_tokens_per_s']} tok/s vs fixed "
                   f"{padding['fixed_tokens_per_s']} tok/s ({padding['ratio']}x)")
    typer.echo(f"pretraining (Mixtral set): dynamic {mixtral['dynamic_tokens_per_s']} tok/s vs fixed "
               f"{mixtral['fixed_tokens_per_s']} tok/s ({mixtral['ratio']}x)")
    typer.echo(f"inference: student {inference['student']} {inference['student_reviews_per_s']} reviews/s vs "
               f"teacher {inference['teacher_reviews_per_s']} ({inference['ratio']}x)")


def structured(
    n_sentences: Annotated[int, typer.Option(help="rest14 train sentences, asked with the analysis prompt.")] = 200,
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    work_dir: Annotated[str, typer.Option(help="Where the converted SmolLM2 teacher is cached.")] = "work",
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder (default: FSA_DATA_DIR, then the "
                                                       "usual search).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """Structured outputs on vs off (SmolLM2, analysis prompt): acceptance and tokens/s; writes
    results/structured_outputs.json."""
    from fsa_distill.cli.console import user_errors
    from fsa_distill.cli.inputs import benchmark_data_dir
    from fsa_distill.core.paths import check_output_dir
    from fsa_distill.perf.bench_structured import RESULTS_PATH, run_structured_bench

    with user_errors():
        check_output_dir(work_dir, "work dir")
        result = run_structured_bench(n_sentences, max_tokens, Path(work_dir), results_path=RESULTS_PATH,
                                      data_dir=benchmark_data_dir(data_dir))
    if as_json:
        print_json(result)
        return
    for arm in ("without", "with"):
        typer.echo(f"{arm:>7} structured outputs: {result[arm]['acceptance_rate']:.1%} accepted, "
                   f"{result[arm]['tokens_per_s']} tok/s")


def stream(
    n_reviews: Annotated[int, typer.Option(min=1, help="rest14 train sentences, asked with both prompts.")] = 64,
    batch_size: Annotated[int, typer.Option(min=1, help="Requests the engine holds (the chunk size of the "
                                                        "chunked arm).")] = 16,
    max_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens (answers stop at EOS).")] = 256,
    repeats: Annotated[int, typer.Option(min=1, help="Runs of each arm, alternating.")] = 2,
    work_dir: Annotated[str, typer.Option(help="Where the converted SmolLM2 teacher is cached.")] = "work",
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder (default: FSA_DATA_DIR, then the "
                                                       "usual search).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """The local engine fed in chunks (a barrier after each) vs as a stream: tokens/s of the generate stage;
    writes results/stream.json."""
    from fsa_distill.cli.console import user_errors
    from fsa_distill.cli.inputs import benchmark_data_dir
    from fsa_distill.core.paths import check_output_dir
    from fsa_distill.perf.bench_stream import RESULTS_PATH, run_stream_bench

    with user_errors():
        check_output_dir(work_dir, "work dir")
        result = run_stream_bench(n_reviews, batch_size, max_tokens, repeats, Path(work_dir),
                                  results_path=RESULTS_PATH, data_dir=benchmark_data_dir(data_dir))
    if as_json:
        print_json(result)
        return
    typer.echo(f"chunked {result['chunked_tokens_per_s']} tok/s, streamed {result['streamed_tokens_per_s']} tok/s: "
               f"{result['streamed_vs_chunked']}x; {result['same_answers']} of {result['answers']} answers equal")


def scale(
    pairs: Annotated[int, typer.Option(help="Pairs in the large synthetic corpus.")] = 2_000_000,
    part: Annotated[str, typer.Option(help="generation (answers through the store, generation dataset and "
                                           "corpus), training (tokenize, train), or all.")] = "all",
    steps: Annotated[int, typer.Option(help="Timed training steps per corpus.")] = 40,
    batch_size: Annotated[int, typer.Option(help="Pretraining batch (the same for both corpora).")] = 16,
    work_dir: Annotated[Path | None, typer.Option(help="Where the temporary corpora go (default: the system "
                                                       "temp folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """The pipeline at corpus scale: N teacher answers (synthetic teacher) through the store into the generation
    dataset and corpus (generation_peak_rss_gib), and training on N pairs vs 20,000 (tokenize_s,
    training_peak_rss_gib, steps/s); writes docs/results/scale.json."""
    from fsa_distill.cli.console import user_errors
    from fsa_distill.core.errors import InputError
    from fsa_distill.perf.bench_scale import PARTS, RESULTS_PATH, run_scale_bench

    with user_errors():
        if part not in (*PARTS, "all"):
            raise InputError(None, "--part", f"expected one of {[*PARTS, 'all']}, got {part!r}")
        if pairs < 1:
            raise InputError(None, "--pairs", "must be at least 1")
        result = run_scale_bench(pairs, part, steps, batch_size, work_dir=work_dir, results_path=RESULTS_PATH)
    if as_json:
        print_json(result)
        return
    generation = result.get("generation")
    if generation:
        typer.echo(f"{generation['answers']:,} answers: store writes {generation['store_write_s']} s, generation "
                   f"dataset {generation['dataset_build_s']} s, corpus {generation['corpus_build_s']} s; peak RSS "
                   f"{generation['generation_peak_rss_gib']} GiB")
    training = result.get("training")
    if training:
        typer.echo(f"{pairs:,} pairs: tokenized in {training['tokenize_s']} s; peak RSS "
                   f"{training['training_peak_rss_gib']} GiB; {training['train_steps_per_s_large']} steps/s vs "
                   f"{training['train_steps_per_s_small']} on 20,000 pairs")


def serve(
    n_sentences: Annotated[int, typer.Option(min=8, help="Benchmark sentences every engine decodes (results "
                                                         "are saved for the full 2,000).")] = 2000,
    sizes: Annotated[str, typer.Option(help="Student sizes timed (random weights, forced output length), "
                                            "comma-separated.")] = "t5-tiny,t5-small",
    quality_sizes: Annotated[str, typer.Option(help="Sizes fine-tuned briefly for the F1 comparison, "
                                                    "comma-separated.")] = "t5-tiny",
    model: Annotated[Path | None, typer.Option(help="An already fine-tuned student folder for the F1 comparison "
                                                    "(instead of fine-tuning --quality-sizes).")] = None,
    finetune_epochs: Annotated[int, typer.Option(min=1, help="Fine-tuning epochs (ATSA rest14 train).")] = 1,
    output_tokens: Annotated[int, typer.Option(min=1, help="New tokens per review, forced for every engine "
                                                           "in the speed runs; the HTTP part's "
                                                           "max_new_tokens.")] = 32,
    threads: Annotated[int | None, typer.Option(min=1, help="Threads of torch and CTranslate2 (default: as "
                                                            "many cores as the teacher's vLLM worker).")] = None,
    skip_teacher: Annotated[bool, typer.Option("--skip-teacher", help="No teacher: student engines only.")] = False,
    work_dir: Annotated[str, typer.Option(help="Fine-tuned students and the converted teacher are cached "
                                               "here.")] = "work",
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder (default: FSA_DATA_DIR, then the "
                                                       "usual search).")] = None,
    part: Annotated[str, typer.Option(help="engines: the engines, the teacher and F1; http: the demo profile's "
                                           "student behind `mlflow models serve` (requests/s, p50/p99 latency per "
                                           "level of concurrent clients, beside its engine in-process); all: both. "
                                           "Each is written into its section of the results file.")] = "all",
    clients: Annotated[str, typer.Option(help="HTTP part: concurrent clients per level, comma-separated (saved "
                                              "for 1,4,16 only).")] = "1,4,16",
    requests_per_level: Annotated[int, typer.Option(min=1, help="HTTP part: requests per level, at most (saved "
                                                                "for 200 or more).")] = 200,
    seconds_per_level: Annotated[float, typer.Option(min=1, help="HTTP part: seconds per level, at most.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """Student torch vs CTranslate2 int8 vs the teacher on vLLM (reviews/s), and F1 of each engine; the default
    student served over HTTP (requests/s, latency); writes docs/results/serve.json."""
    from fsa_distill.cli.console import user_errors
    from fsa_distill.cli.inputs import benchmark_data_dir
    from fsa_distill.core.errors import InputError
    from fsa_distill.core.paths import check_output_dir
    from fsa_distill.perf.bench_serve import RESULTS_PATH, run_serve_bench
    from fsa_distill.perf.bench_serve_http import run_http_bench

    def names(text: str) -> tuple[str, ...]:
        return tuple(name.strip() for name in text.split(",") if name.strip())

    with user_errors():
        if part not in ("all", "engines", "http"):
            raise InputError(None, "--part", f"expected all, engines or http, got {part!r}")
        levels = client_levels(clients)
        check_output_dir(work_dir, "work dir")
        if model is not None:
            from fsa_distill.models.student.load import check_student_dir

            check_student_dir(model)
        result = {} if part == "http" else run_serve_bench(
            n_sentences=n_sentences, sizes=names(sizes), quality_sizes=names(quality_sizes), model=model,
            finetune_epochs=finetune_epochs, output_tokens=output_tokens, threads=threads,
            with_teacher=not skip_teacher, work_dir=Path(work_dir), data_dir=benchmark_data_dir(data_dir),
            results_path=RESULTS_PATH)
        if part != "engines":
            result["http"] = run_http_bench(levels, requests_per_level, seconds_per_level, output_tokens,
                                            work_dir=Path(work_dir), data_dir=benchmark_data_dir(data_dir),
                                            results_path=RESULTS_PATH)
    if as_json:
        print_json(result)
        return
    if part != "http":
        print_engines(result)
    if part != "engines":
        print_http(result["http"])


def client_levels(text: str) -> tuple[int, ...]:
    """`--clients 1,4,16` as numbers; anything else is bad input."""
    from fsa_distill.core.errors import InputError

    try:
        levels = tuple(int(level) for level in text.split(","))
    except ValueError:
        levels = ()
    if not levels or min(levels) < 1 or max(levels) > 256:
        raise InputError(None, "--clients", f"expected comma-separated numbers from 1 to 256, got {text!r}")
    return levels


def print_http(http: dict) -> None:
    engine = http["engine"]
    typer.echo(f"{http['student']} ({engine['engine']}) in-process: {engine['one_per_call']['reviews_per_s']} "
               f"reviews/s one per call, {engine['batched']['reviews_per_s']} batched")
    for clients, level in http["levels"].items():
        typer.echo(f"HTTP, {clients} client(s): {level['requests_per_s']} requests/s, p50 {level['p50_ms']} ms, "
                   f"p99 {level['p99_ms']} ms, {level['errors']} errors of {level['requests']}")


def print_engines(result: dict) -> None:
    teacher = result["teacher"]
    for size, speed in result["speed"].items():
        torch_, ct2 = speed["torch"], speed["ctranslate2_int8"]
        versus = (f"; vs teacher {torch_['student_vs_teacher']}x / {ct2['student_vs_teacher']}x"
                  if teacher else "")
        typer.echo(f"{size}: torch {torch_['reviews_per_s']} reviews/s, CTranslate2 int8 {ct2['reviews_per_s']} "
                   f"reviews/s ({speed['ct2_vs_torch']}x){versus}")
    if teacher:
        typer.echo(f"teacher {teacher['model']} on {teacher['backend']}: {teacher['reviews_per_s']} reviews/s")
    for label, quality in result["quality"].items():
        typer.echo(f"{label} F1 x 100: torch {quality['torch']['f1']}, CTranslate2 int8 "
                   f"{quality['ctranslate2_int8']['f1']} (|delta| {quality['f1_delta_x100']})")


def quality(
    datasets: Annotated[str, typer.Option(help="task/dataset names, comma-separated.")] = "atsa/rest14,acsa/rest16",
    overrides: Annotated[list[str] | None, typer.Option("--set", help="Override one key of the demo profile's "
                                                                      "recipe, e.g. --set finetune.epochs=6.")] = None,
    work_dir: Annotated[str, typer.Option(help="The student and the fine-tuned models go here.")] = "work",
    data_dir: Annotated[Path | None, typer.Option(help="Benchmark data folder (default: FSA_DATA_DIR, then the "
                                                       "usual search).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """The pretrained student fine-tuned on the full train split of each dataset (seed 42): dev curve and test
    F1 per view; writes docs/results/quality.json."""
    from fsa_distill.cli.console import user_errors
    from fsa_distill.cli.inputs import benchmark_data_dir
    from fsa_distill.core.paths import check_output_dir
    from fsa_distill.perf.bench_quality import RESULTS_PATH, run_quality_bench

    with user_errors():
        check_output_dir(work_dir, "work dir")
        result = run_quality_bench([name.strip() for name in datasets.split(",") if name.strip()], overrides or [],
                                   Path(work_dir), benchmark_data_dir(data_dir), RESULTS_PATH)
    if as_json:
        print_json(result)
        return
    for name, run in result["runs"].items():
        views = ", ".join(f"{view} {f1}" for view, f1 in run["test_f1_x100"].items())
        typer.echo(f"{name}: test F1 x 100 {views}; best dev {run['best_dev_f1_x100']} at epoch "
                   f"{run['best_epoch']}; {run['wall_s']} s")
        breakdown = run.get("breakdown") or {}  # runs written before the breakdown existed have none
        parts = {"test.json": breakdown.get("test_json"), "hard_test.json": breakdown.get("hard_test_json"),
                 "polarity ignored": breakdown.get("aspects_only")}
        if shown := "; ".join(f"{part} {scores['f1']}" for part, scores in parts.items() if scores):
            typer.echo(f"  normal view by part: {shown}")


def history(
    n_runs: Annotated[int, typer.Option(help="Synthetic weekly runs in the tracking store.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON line only.")] = False,
) -> None:
    """The history page over N synthetic runs: read and render seconds; writes results/history.json."""
    from fsa_distill.perf.bench_history import RESULTS_PATH, run

    result = run(n_runs=n_runs, out_path=RESULTS_PATH if n_runs >= 200 else None)
    if as_json:
        print_json(result)
        return
    typer.echo(f"history page over {result['n_runs']} runs: read {result['read_s']} s, render {result['render_s']} s "
               f"({result['page_bytes'] / 1e6:.1f} MB; goal < {result['goal_render_s']} s: "
               f"{'met' if result['met'] else 'missed'})")
