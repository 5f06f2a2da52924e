"""Batch prediction over a large JSONL / Parquet file with Ray Data: one student replica per CPU the cluster
has, outputs in input order, and a job that resumes where it stopped.

- Reading is Ray Data's (`read_json(lines=True)` / `read_parquet`); each row gets its position in the file by
  zipping with `ray.data.range(n)` (Ray Data has no row-index column of its own); this indexed input is
  materialised before the replicas start (see `predict_with_ray`).
- `map_batches` runs a callable class, `StudentReplica`, that loads the student once per replica (torch, or the
  CTranslate2 export made once by the driver) and decodes with the engine's own greedy decoder, so outputs equal
  `fsa-distill predict`'s.
- Output is written by the driver in numbered shards of `shard_size` rows (`<out>.shards/part-00000.jsonl`),
  each committed by an atomic rename once all its rows are in. Rows come back in input order
  (`preserve_order`), so shards complete one after another. A rerun skips the rows of committed shards. Ray's
  own writers are not used because they name files after blocks and tasks, not row ranges, and do not commit
  atomically, which is what resuming needs. When every shard is in, they are joined into `<out>` (atomically)
  and the shard folder is removed.

A new embedded Ray (`ray.init(address="local", num_cpus=...)`) by default, never another process's; with
RAY_ADDRESS set, `ray.init()` joins that cluster.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fsa_distill.core.errors import InputError
from fsa_distill.core.files import atomic_file

ROW_COLUMN = "__row"  # the input position carried through the pipeline
SHARD_PATTERN = "part-{:05d}.jsonl"


class StudentReplica:
    """One student per Ray actor: loaded once, then called on batches of rows."""

    def __init__(self, engine: str, model_dir: str, ct2_dir: str | None, batch_size: int, max_new_tokens: int,
                 text_field: str, max_chars: int, output_format: str, task: str) -> None:
        import torch

        from fsa_distill.models.student.engines import load_engine

        torch.set_num_threads(1)  # one CPU per replica (map_batches reserves num_cpus=1 each)
        self.engine = load_engine(engine, model_dir, ct2_dir, threads=1)
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.text_field, self.max_chars = text_field, max_chars
        self.output_format, self.task = output_format, task

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from fsa_distill.core.answers import structured_answer
        from fsa_distill.core.text_budget import cut_text

        # `check_rows` let only strings and nulls through; Ray hands a null back as None or NaN: both answer "".
        texts = [text if isinstance(text, str) else "" for text in batch[self.text_field]]
        # Cut as `read_review_corpus(max_chars=...)` does for plain `predict`, so both decode the same text.
        texts = [cut_text(text, self.max_chars) for text in texts]
        outputs = self.engine.decode(texts, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens)
        ids = batch["id"] if "id" in batch else batch[ROW_COLUMN]
        lines = []
        for row_id, text, output in zip(ids, texts, outputs, strict=True):
            row_id = row_id.item() if hasattr(row_id, "item") else row_id
            record = ({"id": row_id, **structured_answer(output, self.task, text)}
                      if self.output_format == "structured" else {"id": row_id, "prediction": output})
            lines.append(json.dumps(record, ensure_ascii=False))
        return {ROW_COLUMN: batch[ROW_COLUMN], "line": lines}


def start_ray(num_cpus: int | None = None) -> bool:
    """Join RAY_ADDRESS's cluster, or start an embedded one; True when this call started Ray (and must stop it)."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        # "local": a new embedded instance even where another process runs Ray here (ray.init() would join it)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
    return True


def read_dataset(path: Path) -> Any:
    """The input as a Ray dataset: `.parquet` (file or folder of files) or JSON lines."""
    import ray.data

    if path.suffix.lower() == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
        return ray.data.read_parquet(str(path))
    return ray.data.read_json(str(path), lines=True, file_extensions=None)


def check_rows(path: Path, text_field: str) -> None:
    """Every row has `text_field` as a string or null, checked before Ray starts or a shard folder exists: a
    bad row is an InputError naming it, not a failed Ray task after hours of decoding."""
    from fsa_distill.benchmark.importers import iter_review_corpus

    if path.suffix.lower() != ".parquet" and not path.is_dir():
        for _ in iter_review_corpus(path, text_field, keep_blank=True):  # JSON lines: the reader's own checks
            pass
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.ParquetDataset(str(path)).schema
    except (pa.ArrowException, OSError) as error:
        raise InputError(path, None, f"not a readable Parquet file ({' '.join(str(error).split())[:200]})") from None
    if text_field not in schema.names:
        raise InputError(path, None, f"no {text_field!r} column (columns: {schema.names}); pass --text-field")
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)):
        raise InputError(path, None, f"column {text_field!r} must hold strings, not {kind}")


def committed_shards(shard_dir: Path) -> set[int]:
    """Shards whose file exists: they are only ever created by an atomic rename of a complete shard."""
    return {int(path.stem.split("-")[1]) for path in shard_dir.glob("part-*.jsonl")}


def predict_with_ray(model_dir: Path, input_path: Path, out: Path, engine: str = "torch", batch_size: int = 64,
                     max_new_tokens: int = 100, shard_size: int = 10_000, replicas: int | None = None,
                     text_field: str = "text", output_format: str = "raw", task: str = "atsa",
                     num_cpus: int | None = None,
                     on_shard: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Decode every row of `input_path` into `out` (JSONL, input order); returns counts. Resumable (see above)."""
    out = Path(out)
    check_rows(Path(input_path), text_field)
    shard_dir = out.with_name(out.name + ".shards")
    created = not shard_dir.exists()
    shard_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = _predict_shards(model_dir, Path(input_path), out, shard_dir, engine, batch_size, max_new_tokens,
                                 shard_size, replicas, text_field, output_format, task, num_cpus, on_shard)
    except BaseException:
        if created and not committed_shards(shard_dir):  # nothing worth resuming: leave nothing behind
            shutil.rmtree(shard_dir, ignore_errors=True)
        raise
    shutil.rmtree(shard_dir)
    return result


def _predict_shards(model_dir: Path, input_path: Path, out: Path, shard_dir: Path, engine: str, batch_size: int,
                    max_new_tokens: int, shard_size: int, replicas: int | None, text_field: str,
                    output_format: str, task: str, num_cpus: int | None,
                    on_shard: Callable[[int], None] | None) -> dict[str, Any]:
    import ray
    import ray.data

    from fsa_distill.benchmark.importers import chars_for_tokens
    from fsa_distill.models.student.decoding import MAX_SOURCE_LENGTH
    from fsa_distill.models.student.engines import CT2_MODEL_FILE, export_ct2

    ct2_dir = None
    if engine == "ctranslate2":  # exported once here, loaded by every replica (and kept for a resume)
        ct2_dir = shard_dir / "ct2"
        if not (ct2_dir / CT2_MODEL_FILE).exists():
            export_ct2(model_dir, ct2_dir)
    started_ray = start_ray(num_cpus)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # rows come back in input order
        dataset = read_dataset(Path(input_path))
        n_rows = dataset.count()
        positions = ray.data.range(n_rows).rename_columns({"id": ROW_COLUMN})
        # zip pairs rows by position, which holds with preserve_order (Ray 2.60 warns that zip will make way
        # for `join` on a key in 2.64: a JSONL file has no key to join on, so position it is).
        dataset = dataset.zip(positions)
        n_shards = (n_rows + shard_size - 1) // shard_size
        done = committed_shards(shard_dir)
        todo = [shard for shard in range(n_shards) if shard not in done]
        if todo:
            # Materialised (object store, spilled to disk when large) before the replicas start: they hold
            # every CPU, and the read / zip tasks would otherwise wait for one forever (a 2-CPU cluster hangs).
            dataset = dataset.filter(lambda row: row[ROW_COLUMN] // shard_size not in done).materialize()
            workers = replicas or max(1, int(ray.cluster_resources().get("CPU", 1)))
            lines = dataset.map_batches(
                StudentReplica, batch_size=batch_size, concurrency=workers, num_cpus=1,
                fn_constructor_kwargs={"engine": engine, "model_dir": str(model_dir),
                                       "ct2_dir": str(ct2_dir) if ct2_dir else None, "batch_size": batch_size,
                                       "max_new_tokens": max_new_tokens, "text_field": text_field,
                                       "max_chars": chars_for_tokens(MAX_SOURCE_LENGTH),
                                       "output_format": output_format, "task": task})
            _write_shards(lines, shard_dir, shard_size, n_rows, on_shard)
        _join_shards(shard_dir, n_shards, out)
    finally:
        if started_ray:
            ray.shutdown()
    return {"rows": n_rows, "shards": n_shards, "shards_resumed": len(done), "shard_size": shard_size}


def _write_shards(lines: Any, shard_dir: Path, shard_size: int, n_rows: int,
                  on_shard: Callable[[int], None] | None) -> None:
    buffer: list[str] = []
    shard = None
    for batch in lines.iter_batches(batch_format="numpy", batch_size=None):
        for row, line in zip(batch[ROW_COLUMN], batch["line"], strict=True):
            row_shard = int(row) // shard_size
            if shard is None:
                shard = row_shard
            if row_shard != shard:  # rows arrive in order: a new shard means the last one was complete
                raise RuntimeError(f"shard {shard} incomplete when row {int(row)} arrived")
            buffer.append(str(line))
            if len(buffer) == min(shard_size, n_rows - shard * shard_size):
                with atomic_file(shard_dir / SHARD_PATTERN.format(shard)) as handle:
                    handle.write("".join(text + "\n" for text in buffer))
                if on_shard is not None:
                    on_shard(shard)
                buffer, shard = [], None
    if buffer:
        raise RuntimeError(f"shard {shard} ended with {len(buffer)} rows of {shard_size}")


def _join_shards(shard_dir: Path, n_shards: int, out: Path) -> None:
    with atomic_file(out) as handle:
        for shard in range(n_shards):
            with open(shard_dir / SHARD_PATTERN.format(shard), encoding="utf-8") as part:
                shutil.copyfileobj(part, handle)
