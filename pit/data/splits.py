"""Deterministic train/val/test/judge split by a hash of the prompt: one prompt never lands in two splits."""

from __future__ import annotations

import hashlib

from pit.data.schema import PreferenceExample
from pit.errors import ConfigError

SPLITS = ("train", "val", "test", "judge")


def prompt_bucket(prompt: str, salt: str = "") -> float:
    """A stable pseudo-random number in [0, 1) for a prompt (independent of order, process and platform)."""
    digest = hashlib.sha256(f"{salt}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_examples(examples: list[PreferenceExample], val: float, test: float, judge: float,
                   salt: str = "") -> dict[str, list[PreferenceExample]]:
    """Assign each example to train/val/test/judge by its prompt hash; `judge` is reserved for the held-out judge."""
    if min(val, test, judge) < 0 or val + test + judge >= 1:
        raise ConfigError(f"splits: fractions must be >= 0 and leave room for train: {val=} {test=} {judge=}")
    edges = [("val", val), ("test", val + test), ("judge", val + test + judge)]
    out: dict[str, list[PreferenceExample]] = {name: [] for name in SPLITS}
    for example in examples:
        bucket = prompt_bucket(example.prompt, salt)
        out[next((name for name, edge in edges if bucket < edge), "train")].append(example)
    return out
