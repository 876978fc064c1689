"""Preference data: one schema, several sources, deterministic splits, prompt templates."""

from pit.data.schema import DataError, LoadedData, PreferenceExample

__all__ = ["DataError", "LoadedData", "PreferenceExample"]
