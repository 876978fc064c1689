"""Reading JSON-lines files (plain or gzip) with errors that name file, line and field; the generic source."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pit.data.schema import DataError, LoadedData, PreferenceExample, PreferenceSource, drop_reason


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, object)` for each non-blank line; raise DataError on a missing/empty file, a line that is
    not UTF-8 (a leading byte-order mark is accepted) or not a JSON object, naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    seen = False
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    raise DataError(str(path), f"not valid UTF-8 (byte {err.start} of the line)", line_no) from None
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(str(path), f"invalid JSON ({err.msg} at column {err.colno})", line_no) from None
                if not isinstance(obj, dict):
                    raise DataError(str(path), f"expected a JSON object, got {type(obj).__name__}", line_no)
                seen = True
                yield line_no, obj
    except (OSError, EOFError) as err:
        raise DataError(str(path), f"cannot read file ({err})") from None
    if not seen:
        raise DataError(str(path), "file is empty")


def get_field(obj: dict[str, Any], name: str, where: str, line: int, kind: type = str) -> Any:
    """Return `obj[name]` (dotted names reach into nested objects) checked to be of `kind`."""
    value: Any = obj
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(where, "missing", line, name)
        value = value[part]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise DataError(where, f"expected {kind.__name__}, got {type(value).__name__}", line, name)
    return value


class JsonlSource(PreferenceSource):
    """Any local JSON-lines file with configurable field names for prompt, chosen and rejected."""

    def __init__(self, path: str, prompt_field: str = "prompt", chosen_field: str = "chosen",
                 rejected_field: str = "rejected", name: str = "jsonl", **presentation: Any):
        super().__init__(name, **presentation)
        self.path, self.name = path, name
        self.fields = (prompt_field, chosen_field, rejected_field)

    def load(self) -> LoadedData:
        examples, dropped = [], Counter()
        for line, obj in read_jsonl(self.path):
            prompt, chosen, rejected = (get_field(obj, f, self.path, line) for f in self.fields)
            reason = drop_reason(chosen, rejected)
            if reason:
                dropped[reason] += 1
            else:
                examples.append(PreferenceExample(prompt, chosen, rejected, {"line": line}))
        return LoadedData(f"jsonl:{self.path}", examples, dropped)
