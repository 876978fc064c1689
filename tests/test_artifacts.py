"""Cache keys and atomic artifacts: stable keys, nothing half-written under a final name, corruption detected."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from pit.artifacts import MARKER, ArtifactStore, cache_key, write_json_atomic


def test_cache_key_is_stable_and_sensitive() -> None:
    key = cache_key("sft_policy", {"lr": 1e-3, "steps": 10}, {"tokenizer": "abc"})
    assert key == cache_key("sft_policy", {"steps": 10, "lr": 1e-3}, {"tokenizer": "abc"})
    assert len(key) == 16 and int(key, 16) >= 0
    assert key != cache_key("sft_policy", {"lr": 1e-3, "steps": 11}, {"tokenizer": "abc"})
    assert key != cache_key("sft_policy", {"lr": 1e-3, "steps": 10}, {"tokenizer": "abd"})
    assert key != cache_key("sft_pit", {"lr": 1e-3, "steps": 10}, {"tokenizer": "abc"})


def test_cache_key_is_stable_across_processes() -> None:
    import subprocess
    import sys

    code = "from pit.artifacts import cache_key; print(cache_key('s', {'b': [1, 2], 'a': None}, {'u': 'k'}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == cache_key("s", {"a": None, "b": [1, 2]}, {"u": "k"})


def test_write_success_and_failure(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.write("stage", "k1") as (out, metrics):
            (out / "weights.bin").write_bytes(b"1234")
            raise RuntimeError("killed mid-stage")
    assert not store.path("stage", "k1").exists() and not list((tmp_path / "stage").iterdir())
    with store.write("stage", "k1") as (out, metrics):
        (out / "weights.bin").write_bytes(b"1234")
        metrics["loss"] = 0.5
    assert store.is_complete("stage", "k1") and store.metrics("stage", "k1") == {"loss": 0.5}
    marker = json.loads((store.path("stage", "k1") / MARKER).read_text())
    assert marker["files"] == {"weights.bin": {"size": 4, "sha256": hashlib.sha256(b"1234").hexdigest()}}


def test_truncated_corrupted_or_unmarked_artifact_is_not_complete(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    store = ArtifactStore(tmp_path)
    with store.write("stage", "k") as (out, _):
        (out / "weights.bin").write_bytes(b"12345678")
    (store.path("stage", "k") / "weights.bin").write_bytes(b"1234")
    assert not store.is_complete("stage", "k")
    (store.path("stage", "k") / "weights.bin").write_bytes(b"12345679")      # same size, one byte flipped
    with caplog.at_level(logging.WARNING):
        assert not store.is_complete("stage", "k")
    assert "weights.bin is corrupted (checksum differs): rebuilding stage stage" in caplog.text
    (store.path("stage", "k") / MARKER).unlink()
    assert not store.is_complete("stage", "k")
    with store.write("stage", "k") as (out, _):          # rebuilt in place of the broken one
        (out / "weights.bin").write_bytes(b"abc")
    assert store.is_complete("stage", "k")


def test_leftover_temp_dirs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    """A leftover is judged by its lock, not its pid: a live writer (its lock held) keeps its dir."""
    from filelock import FileLock

    store = ArtifactStore(tmp_path)
    (tmp_path / "stage").mkdir()
    dead = tmp_path / "stage" / ".tmp-k-somehost-999999999"
    alive = tmp_path / "stage" / f".tmp-k-otherhost-{os.getpid()}"   # a live writer's work in progress
    dead.mkdir()
    alive.mkdir()
    writer = FileLock(f"{alive}.lock")
    writer.acquire()
    with store.write("stage", "k") as (out, _):
        (out / "f").write_text("x")
    assert not dead.exists() and alive.exists()
    writer.release()


def test_write_json_atomic(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "r.json", {"b": 1, "a": [1.5]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": [1.5], "b": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
