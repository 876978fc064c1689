"""Causal LMs and tokenizers: built from config or loaded by name/path, saved and reloaded as stage artifacts."""
