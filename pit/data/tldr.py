"""OpenAI TL;DR human comparisons (`openai/summarize_from_feedback`, config `comparisons`).

That hub dataset is a loading script, which `datasets` >= 4 refuses to run; it is read from the hub's parquet
conversion instead (`PARQUET_EXPORT`), with every `datasets` version this project allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pit.data.hub import PARQUET_EXPORT, HubOrFileSource, load_parquet_rows
from pit.data.jsonl import get_field
from pit.data.schema import DataError, LoadedData, PreferenceExample, drop_reason

INFO_TEXTS = ("post", "article", "title", "subreddit")   # the `info` fields a prompt is made of, each text or absent


def tldr_prompt(info: dict[str, Any]) -> str:
    """The usual TL;DR prompt: subreddit, title and post (news articles use `article` instead of `post`)."""
    body = info.get("post") or info.get("article") or ""
    header = f"SUBREDDIT: r/{info['subreddit']}\n" if info.get("subreddit") else ""
    title = f"TITLE: {info['title']}\n" if info.get("title") else ""
    return f"{header}{title}POST: {body}\nTL;DR:"


def summary_text(summaries: list[Any], index: int, where: str, line: int) -> str:
    """`summaries[index].text`, checked: an object whose `text` is a string."""
    summary = summaries[index]
    text = summary.get("text") if isinstance(summary, dict) else None
    if not isinstance(text, str):
        got = type(text).__name__ if isinstance(summary, dict) else f"a {type(summary).__name__} summary"
        raise DataError(where, f"expected str, got {got}", line, f"summaries[{index}].text")
    return text


class TLDRSource(HubOrFileSource):
    """Comparisons from the hub or local files of that format: post -> prompt, `choice` picks the chosen summary."""

    def __init__(self, path: str | None = None, hub_name: str = "openai/summarize_from_feedback",
                 hub_config: str = "comparisons", split: str = "train", name: str = "tldr", **presentation: Any):
        super().__init__(path, hub_name, split, name, {}, **presentation)
        self.hub_config = hub_config

    def hub_rows(self) -> list[dict[str, Any]]:
        """The split's rows from the hub's parquet conversion of the dataset (its loading script is not run)."""
        return load_parquet_rows(PARQUET_EXPORT.format(name=self.hub_name, config=self.hub_config, split=self.split))

    def parse(self, rows: Iterable[tuple[int, dict[str, Any]]], where: str) -> LoadedData:
        examples, dropped = [], Counter()
        for line, row in rows:
            present = get_field(row, "info", where, line, dict)
            info = {k: get_field(row, f"info.{k}", where, line) for k in INFO_TEXTS if present.get(k) is not None}
            if not (info.get("post") or info.get("article")):
                raise DataError(where, "needs a non-empty 'post' or 'article'", line, "info.post")
            summaries = get_field(row, "summaries", where, line, list)
            choice = get_field(row, "choice", where, line, int)
            if len(summaries) != 2 or choice not in (0, 1):
                raise DataError(where, f"expected 2 summaries and choice 0/1, got {len(summaries)} and {choice}",
                                line, "choice")
            chosen, rejected = (summary_text(summaries, i, where, line) for i in (choice, 1 - choice))
            if reason := drop_reason(chosen, rejected):
                dropped[reason] += 1
            else:
                examples.append(PreferenceExample(tldr_prompt(info), chosen, rejected, {"line": line}))
        return LoadedData(f"{self.name}:{where}", examples, dropped)
