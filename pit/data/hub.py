"""Loading a dataset from the Hugging Face hub, with an error that says what to do when the hub is unreachable."""

from __future__ import annotations

from typing import Any

from pit.data.schema import DataError


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
