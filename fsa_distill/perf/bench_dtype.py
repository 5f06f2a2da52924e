"""bf16 autocast against float32 for the student's fine-tuning on CPUs (`fsa-distill bench train --part dtype`).

The same fine-tuning run (pretrained student, rest14 subset, same seed and recipe) once in float32 and once under
bf16 autocast: training tokens/s, dev F1 at the end, and MFU against the matmul peak of the dtype used, measured
in the same run. bf16 becomes the CPU default only where it is faster and dev F1 drops by at most 0.5 points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_DEV_F1_DROP_X100 = 0.5


def bench_dtype(student: str, work: Path, data_dir: Path | None, n_train: int = 2432, n_dev: int = 150,
                epochs: int = 2) -> dict[str, Any]:
    """Fine-tune `student` on the first `n_train` rest14 sentences in float32 and under bf16 autocast. The
    default is the demo's fine-tuning (every train sentence, 304 steps): long enough that dev F1 is not 0 and the
    two dtypes can be compared at it."""
    from fsa_distill.core.config import resolve_config
    from fsa_distill.models.student import build_student, load_student
    from fsa_distill.perf.bench_train import peak_matmul_flops
    from fsa_distill.tasks.stages.finetune import FinetuneSettings, finetune

    student_dir = work / "dtype" / "student"
    if not student_dir.exists():
        build_student(student, student_dir, [], 8000)
    n_params = sum(p.numel() for p in load_student(student_dir)[0].parameters())
    runs: dict[str, dict[str, Any]] = {}
    for mode, dtype in (("off", "float32"), ("on", "bfloat16")):
        overrides = [f"data.max_train_sentences={n_train}", f"data.max_dev_sentences={n_dev}",
                     f"data.max_test_sentences={n_dev}", f"finetune.epochs={epochs}", "finetune.seeds=[42]",
                     f"finetune.bf16={mode}", f"work_dir={work}"]
        if data_dir is not None:
            overrides.append(f"data.data_dir={data_dir}")
        config = resolve_config("demo", overrides=overrides)
        result = finetune(student_dir, "atsa", "rest14", 42, FinetuneSettings.of(config),
                          work / "dtype" / mode, key=config.digest())
        peak = peak_matmul_flops(dtype=dtype)
        runs[dtype] = {"train_tokens_per_s": round(result["train_tokens_per_s"], 1),
                       "dev_f1_x100": round(100 * result["best_dev_f1"], 2),
                       "peak_matmul_gflops": round(peak / 1e9, 1),
                       "mfu": round(6 * n_params * result["train_tokens_per_s"] / peak, 4)}
    fp32, bf16 = runs["float32"], runs["bfloat16"]
    speedup = bf16["train_tokens_per_s"] / fp32["train_tokens_per_s"]
    drop = fp32["dev_f1_x100"] - bf16["dev_f1_x100"]
    return {"student": student, "n_params": n_params, "n_train": n_train, "n_dev": n_dev, "epochs": epochs,
            "runs": runs, "bf16_speedup": round(speedup, 3), "dev_f1_drop_x100": round(drop, 2),
            "bf16_is_cpu_default": speedup > 1 and drop <= MAX_DEV_F1_DROP_X100,
            "cpu_flags_bf16": _cpu_has_native_bf16(),
            "note": ("MFU = 6*N*(real tokens/s) over the best square matmul's (up to 2048^3) FLOP/s in the "
                     "dtype used, same run.")}


def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: where bf16 matmuls run natively on an x86 CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
