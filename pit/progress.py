"""Progress bars for the long steps that are not Lightning fits (sampling, scoring, the LLM judge)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None, unit: str = "batch") -> Iterable[T]:
    """`items` with a transient tqdm bar on an interactive terminal; plain `items` in CI, a pipe or a log file, and
    for a single step (a PPO iteration's one scoring batch needs no bar of its own)."""
    if os.environ.get("CI") or (total is not None and total <= 1):
        return items
    return tqdm(items, desc=desc, total=total, unit=unit, disable=None, leave=False, dynamic_ncols=True)
