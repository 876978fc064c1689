"""Loading a dataset from the Hugging Face hub or its parquet export, with an error that says what to do when the hub
is unreachable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pit.data.jsonl import read_jsonl
from pit.data.schema import DataError, LoadedData, PreferenceSource

# The hub's own parquet conversion of a dataset (its `refs/convert/parquet` revision): the way to read a dataset that
# only has a loading script, which `datasets` >= 4 no longer runs.
PARQUET_EXPORT = "hf://datasets/{name}@refs%2Fconvert%2Fparquet/{config}/{split}/*.parquet"
LOCAL_FILE_HINT = "download the data once and pass a local file with dataset.path=... (.jsonl[.gz], or .parquet files)"


def load_hub_rows(name: str, split: str, **kwargs: Any) -> list[dict[str, Any]]:
    """Rows of hub dataset `name` (split `split`); a DataError naming the local-path option when it cannot load."""
    import datasets

    try:
        return list(datasets.load_dataset(name, split=split, **kwargs))
    except Exception as err:  # the hub raises many types (ConnectionError, OfflineModeIsEnabled, HfHubHTTPError...)
        raise DataError(
            f"hub:{name}[{split}]",
            f"cannot load from the Hugging Face hub ({type(err).__name__}: {err}). "
            f"If the hub is unreachable, {LOCAL_FILE_HINT}",
        ) from None


def load_parquet_rows(files: str) -> list[dict[str, Any]]:
    """Rows of parquet files: a local path or glob, or an `hf://` path; a DataError naming the files when unreadable."""
    import datasets

    try:
        return list(datasets.load_dataset("parquet", data_files=files, split="train"))
    except Exception as err:  # missing files, the hub unreachable, not parquet...: one line that names the files
        remote = files.startswith("hf://")
        raise DataError(files, f"cannot read parquet files ({type(err).__name__}: {err})."
                        + (f" If the hub is unreachable, {LOCAL_FILE_HINT}" if remote else "")) from None


class HubOrFileSource(PreferenceSource):
    """A source read from local `.jsonl[.gz]` or `.parquet` files when `path` is set, else from the hub."""

    def __init__(self, path: str | None, hub_name: str, split: str, name: str, hub_kwargs: dict[str, Any],
                 **presentation: Any):
        super().__init__(name, **presentation)
        self.path, self.hub_name, self.split, self.hub_kwargs = path, hub_name, split, hub_kwargs

    def load(self) -> LoadedData:
        if self.path and self.path.endswith(".parquet"):
            return self.parse(enumerate(load_parquet_rows(self.path)), self.path)
        if self.path:
            return self.parse(read_jsonl(self.path), self.path)
        return self.parse(enumerate(self.hub_rows()), f"hub:{self.hub_name}[{self.split}]")

    def hub_rows(self) -> list[dict[str, Any]]:
        """The split's rows from the hub, through `datasets.load_dataset` (a repo of data files, no script)."""
        return load_hub_rows(self.hub_name, self.split, **self.hub_kwargs)

    def parse(self, rows: Iterable[tuple[int, dict[str, Any]]], where: str) -> LoadedData:
        """Turn `(line or row number, record)` pairs into preference pairs; `where` names the file or hub split."""
        raise NotImplementedError
