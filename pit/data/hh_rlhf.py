"""Anthropic HH-RLHF: two full transcripts per line that should differ only in the final assistant turn."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pit.data.hub import HubOrFileSource
from pit.data.jsonl import get_field
from pit.data.schema import LoadedData, PreferenceExample, drop_reason

ASSISTANT = "\n\nAssistant:"


def split_transcript(transcript: str) -> tuple[str, str] | None:
    """(prompt up to and including the last `\\n\\nAssistant:`, final response), or None without such a turn."""
    cut = transcript.rfind(ASSISTANT)
    if cut < 0:
        return None
    cut += len(ASSISTANT)
    return transcript[:cut], transcript[cut:]


class HHRLHFSource(HubOrFileSource):
    """`Anthropic/hh-rlhf` from the hub (optionally one subset dir) or a local `.jsonl[.gz]` of the same format."""

    def __init__(self, path: str | None = None, hub_name: str = "Anthropic/hh-rlhf", subset: str | None = None,
                 split: str = "train", name: str = "hh_rlhf", **presentation: Any):
        super().__init__(path, hub_name, split, name, {"data_dir": subset}, **presentation)

    def parse(self, rows: Iterable[tuple[int, dict[str, Any]]], where: str) -> LoadedData:
        """Turn `(line, {"chosen", "rejected"})` rows into pairs; count each documented reason for dropping one."""
        examples, dropped = [], Counter()
        for line, row in rows:
            chosen, rejected = (split_transcript(get_field(row, f, where, line)) for f in ("chosen", "rejected"))
            if chosen is None or rejected is None:
                dropped["no_assistant_turn"] += 1
            elif chosen[0] != rejected[0]:
                dropped["diverged_before_last_turn"] += 1
            elif reason := drop_reason(chosen[1], rejected[1]):
                dropped[reason] += 1
            else:
                examples.append(PreferenceExample(chosen[0], chosen[1], rejected[1], {"line": line}))
        return LoadedData(f"{self.name}:{where}", examples, dropped)
