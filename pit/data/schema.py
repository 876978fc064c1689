"""The one record every data source produces, and the error every source raises on bad input."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pit.data.templates import Templates
from pit.errors import UserError


class DataError(UserError):
    """Bad input data; the message names the file (or hub dataset), the line (or row) and the field."""

    def __init__(self, where: str, message: str, line: int | None = None, field_name: str | None = None):
        location = where if line is None else f"{where}:{line}"
        detail = f" field '{field_name}':" if field_name else ""
        super().__init__(f"{location}:{detail} {message}")


@dataclass(frozen=True)
class PreferenceExample:
    """A prompt `x` with a preferred response `y_w` (chosen) and a dispreferred one `y_l` (rejected)."""

    prompt: str
    chosen: str
    rejected: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


Oracle = Callable[[str, str], float]


def drop_reason(chosen: str, rejected: str) -> str | None:
    """The documented filter every source applies: a pair is unusable when a response is empty or both are equal."""
    if not chosen.strip() or not rejected.strip():
        return "empty_response"
    if chosen.strip() == rejected.strip():
        return "identical_responses"
    return None


@dataclass
class LoadedData:
    """What a source returns: the examples, counts of pairs removed by documented filters, an optional oracle."""

    source: str
    examples: list[PreferenceExample]
    dropped: Counter = field(default_factory=Counter)
    oracle: Oracle | None = None

    def __post_init__(self) -> None:
        if not self.examples:
            reasons = ", ".join(f"{k}={v}" for k, v in self.dropped.items()) or "the source was empty"
            raise DataError(self.source, f"no usable preference pairs ({reasons})")


class PreferenceSource:
    """A `dataset=` choice: where pairs come from (`load`), and how a model sees them (templates, token limits)."""

    has_oracle = False   # whether `load` returns an exact oracle (then `judge=auto` trains no judge model)

    def __init__(self, name: str, templates: Templates | None = None, max_prompt_tokens: int = 256,
                 max_response_tokens: int = 128):
        self.name, self.templates = name, templates or Templates()
        self.max_prompt_tokens, self.max_response_tokens = max_prompt_tokens, max_response_tokens

    @property
    def max_improver_tokens(self) -> int:
        """Input budget of the improver: the prompt plus a reference response."""
        return self.max_prompt_tokens + self.max_response_tokens

    def load(self) -> LoadedData:
        raise NotImplementedError
