"""One-line progress for the `datasets` steps of our own stages: checking answers, building pairs, tokenizing.

The CLI switches `datasets`' own bars off for the whole run (`HF_DATASETS_DISABLE_PROGRESS_BARS`: its saving and
loading bars are the library's, not the run's), and that variable has priority over `datasets.enable_progress_bars()`.
So our steps count their rows themselves: the batched function they hand to `map` / `filter` advances a tqdm bar.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any

from tqdm.auto import tqdm


def counting_rows(function: Callable[..., Any], bar: tqdm) -> Callable[..., Any]:
    """`function` (a batched `datasets` function) that advances `bar` by each batch's row count.

    The first argument is the batch: a dict of columns (`map`), or the first input column's list (`input_columns`).
    Pass the step an explicit `new_fingerprint`: `datasets` cannot hash a function that holds a bar.
    """

    @wraps(function)
    def counted(batch: Any, *args: Any, **kwargs: Any) -> Any:
        result = function(batch, *args, **kwargs)
        bar.update(len(next(iter(batch.values()))) if isinstance(batch, Mapping) else len(batch))
        return result

    return counted
