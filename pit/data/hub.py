"""Loading a dataset from the Hugging Face hub, with an error that says what to do when the hub is unreachable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pit.data.jsonl import read_jsonl
from pit.data.schema import DataError, LoadedData, PreferenceSource


def load_hub_rows(name: str, split: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Rows of hub dataset `name` (split `split`); a DataError naming the local-path option when it cannot load."""
    import datasets

    try:
        return list(datasets.load_dataset(name, split=split, **kwargs))
    except Exception as err:  # the hub raises many types (ConnectionError, OfflineModeIsEnabled, HfHubHTTPError...)
        raise DataError(
            f"hub:{name}[{split}]",
            f"cannot load from the Hugging Face hub ({type(err).__name__}: {err}). "
            "If the hub is unreachable, download the data once and pass a local file with dataset.path=...",
        ) from None


class HubOrFileSource(PreferenceSource):
    """A source read from a local `.jsonl[.gz]` when `path` is set, else from a hub dataset of the same format."""

    def __init__(self, path: str | None, hub_name: str, split: str, name: str, hub_kwargs: dict[str, Any],
                 **presentation: Any):
        super().__init__(name, **presentation)
        self.path, self.hub_name, self.split, self.hub_kwargs = path, hub_name, split, hub_kwargs

    def load(self) -> LoadedData:
        if self.path:
            return self.parse(read_jsonl(self.path), self.path)
        rows = load_hub_rows(self.hub_name, self.split, **self.hub_kwargs)
        return self.parse(enumerate(rows), f"hub:{self.hub_name}[{self.split}]")

    def parse(self, rows: Iterable[tuple[int, dict[str, Any]]], where: str) -> LoadedData:
        """Turn `(line or row number, record)` pairs into preference pairs; `where` names the file or hub split."""
        raise NotImplementedError
