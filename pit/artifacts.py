"""Content-addressed stage artifacts: `<cache_dir>/<stage>/<key>/`, written to a temp dir and renamed when complete.

A stage's key hashes its own config subtree and its upstream stages' keys, so changing anything a
stage depends on gives a new key, and anything else (another sweep point, a rerun) reuses the artifact.
A directory under its final name is complete by construction: it only appears through an atomic rename
after the stage's files and its completion marker (file names, sizes and SHA-256) were written. A reuse
checks every file against the marker, so a truncated or corrupted artifact is named in the log and rebuilt,
never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 4   # bump when a stage would compute something different from the same config
MARKER = "_COMPLETE.json"


def cache_key(stage: str, config: Any, upstream: Mapping[str, str]) -> str:
    """A short stable hash of (stage, its config subtree, its upstream keys); key order does not matter."""
    payload = json.dumps({"format": FORMAT_VERSION, "stage": stage, "config": config, "upstream": dict(upstream)},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` through a temp file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line (inside an artifact's temp dir, which is what makes it atomic)."""
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


class ArtifactStore:
    """Finished stage artifacts under `root`; `write` yields a temp dir that becomes the artifact on success."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def checkpoints(self, stage: str, key: str) -> Path:
        """Where the unfinished stage keeps its mid-stage checkpoints (removed once the artifact is complete)."""
        return self.root / stage / f".ckpt-{key}"

    def is_complete(self, stage: str, key: str) -> bool:
        """True only for a renamed artifact whose files all match its marker (present, same size and SHA-256)."""
        directory = self.path(stage, key)
        try:
            marker = json.loads((directory / MARKER).read_text())
        except (OSError, json.JSONDecodeError):
            return False
        for name, expected in marker["files"].items():
            path = directory / name
            size, digest = (expected, None) if isinstance(expected, int) else (expected["size"], expected["sha256"])
            problem = ("missing" if not path.is_file() else "truncated or grown" if path.stat().st_size != size
                       else "corrupted (checksum differs)" if digest and file_sha256(path) != digest else None)
            if problem:
                log.warning("artifact %s is %s: rebuilding stage %s", path, problem, stage)
                return False
        return True

    def metrics(self, stage: str, key: str) -> dict[str, float]:
        return json.loads((self.path(stage, key) / MARKER).read_text())["metrics"]

    @contextmanager
    def write(self, stage: str, key: str, publish: bool = True) -> Iterator[tuple[Path, dict[str, float]]]:
        """Yield (temp dir, metrics dict to fill); on success mark complete and rename into place, else discard.

        `publish=False` (a DDP rank other than zero): the temp dir is always discarded and nothing else touched.
        """
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if publish:
            for leftover in final.parent.glob(f".tmp-{key}-*"):
                if not _pid_alive(int(leftover.name.rsplit("-", 1)[1])):
                    shutil.rmtree(leftover, ignore_errors=True)
            if final.exists():
                shutil.rmtree(final)
        tmp = final.parent / f".tmp-{key}-{os.getpid()}"
        tmp.mkdir()
        metrics: dict[str, float] = {}
        try:
            yield tmp, metrics
            if not publish:
                return
            files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            write_json_atomic(tmp / MARKER, {"stage": stage, "key": key, "metrics": metrics, "files": files})
            try:
                os.rename(tmp, final)
            except OSError:
                if not self.is_complete(stage, key):
                    raise
            shutil.rmtree(self.checkpoints(stage, key), ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs (a temp dir of a live process may be another sweep point's work)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
