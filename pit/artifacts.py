"""Content-addressed stage artifacts: `<cache_dir>/<stage>/<key>/`, written to a temp dir and renamed when complete.

A stage's key hashes its own config subtree, its upstream stages' keys and the code (a digest of the `pit`
package's source, or a pinned `cache.code_version`), so changing anything a stage depends on gives a new key,
and anything else (another sweep point, a rerun) reuses the artifact.

Many jobs may share one cache (parallel sweep points, cluster jobs on a shared filesystem): a stage is built
under a lock per (stage, key) (`fcntl` through `filelock`, released by the OS when its holder dies), so one job
builds and the others wait and reuse, or take over from the last checkpoint of a holder that died. Each temp dir
is held under a lock of its own while its writer lives; a leftover is removed only once that lock can be taken,
whatever host wrote it.
A directory under its final name is complete by construction: it only appears through an atomic rename
after the stage's files and its completion marker (file names, sizes and SHA-256) were written. A reuse
checks every file against the marker, so a truncated or corrupted artifact is named in the log and rebuilt,
never loaded.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

FORMAT_VERSION = 4   # bump when a stage would compute something different from the same config
MARKER = "_COMPLETE.json"
PACKAGE = Path(__file__).resolve().parent   # the `pit` package, whose source is in every stage key


def cache_key(stage: str, config: Any, upstream: Mapping[str, str], code: str | None = None) -> str:
    """A short stable hash of (stage, its config subtree, its upstream keys, the code version); key order does not
    matter. `code=None`: the key of the configuration alone (to tell a user that only the code changed)."""
    payload = json.dumps({"format": FORMAT_VERSION, "stage": stage, "config": config, "upstream": dict(upstream),
                          **({"code": code} if code is not None else {})}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@functools.cache
def source_digest(package: Path = PACKAGE) -> str:
    """SHA-256 (16 hex) over a package's Python files (default: `pit`), paths and contents: an edit gives new keys."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def foreign_source(cls: type) -> dict[str, str]:
    """For a key: the digest of the file defining `cls` when it lives outside `pit` (a user's `gap=` class), so an
    edit to it reruns what it made, as `source_digest` does for `pit`'s own classes; {} for those."""
    path = Path(inspect.getfile(cls)).resolve()
    if path.is_relative_to(PACKAGE):
        return {}
    return {"source": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}


def writer_id() -> str:
    """`<host>-<pid>`: who writes a temp file or dir (pids repeat across the hosts of a cluster)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` through a temp file and a rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{writer_id()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_problem(path: Path, size: int, sha256: str) -> str | None:
    """What is wrong with `path` against the size and SHA-256 recorded when it was written, or None: the one check
    of artifacts (their completion marker) and mid-stage checkpoints (their sidecar)."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size != size:
        return "truncated or grown"
    if file_sha256(path) != sha256:
        return "corrupted (checksum differs)"
    return None


def stage_metrics(directory: Path) -> dict[str, float]:
    """The metrics recorded in the completion marker of a finished stage's artifact `directory`."""
    return json.loads((directory / MARKER).read_text())["metrics"]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line (inside an artifact's temp dir, which is what makes it atomic)."""
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


class ArtifactStore:
    """Finished stage artifacts under `root`; `write` yields a temp dir that becomes the artifact on success."""

    def __init__(self, root: str | Path, locking: bool = True):
        self.root = Path(root).expanduser().resolve()
        self.locking = locking   # off for a multi-process (DDP) job, whose ranks build or reuse together

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def checkpoints(self, stage: str, key: str) -> Path:
        """Where the unfinished stage keeps its mid-stage checkpoints (removed once the artifact is complete)."""
        return self.root / stage / f".ckpt-{key}"

    @contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Hold the (stage, key) build lock; while another job holds it, wait and say for whom."""
        if not self.locking:
            yield
            return
        path = self.root / ".locks" / stage / f"{key}.lock"   # beside, not in, the stage dir its users list
        path.parent.mkdir(parents=True, exist_ok=True)
        holder = path.with_name(path.name + ".holder")
        lock = FileLock(path)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            who = holder.read_text().strip() if holder.is_file() else "another job"
            log.info("stage %s: waiting for %s, which is building it (lock %s)", stage, who, path)
            lock.acquire()
        try:
            holder.write_text(writer_id() + "\n")
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()

    def rerun_reason(self, stage: str, config_key: str, code: str) -> str:
        """Why `stage` runs when complete artifacts of this configuration exist, built by other code; else ""."""
        others = set()
        for marker in (self.root / stage).glob(f"*/{MARKER}"):
            try:
                entry = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if entry.get("config_key") == config_key:
                others.add(str(entry.get("code")))
        if not others:
            return ""
        return (f"the cache has it built by other code (pit source {', '.join(sorted(others))}, now {code}): "
                f"rerunning. Pin cache.code_version to reuse across an edit you know is cosmetic")

    def wait_for(self, stage: str, key: str, poll_seconds: float = 2.0) -> None:
        """Poll until (stage, key) is complete: it appears by an atomic rename (no collective, so a long build on
        another rank cannot time a wait out)."""
        while not self.path(stage, key).is_dir():
            time.sleep(poll_seconds)

    def is_complete(self, stage: str, key: str) -> bool:
        """True only for a renamed artifact whose files all match its marker (present, same size and SHA-256)."""
        directory = self.path(stage, key)
        try:
            marker = json.loads((directory / MARKER).read_text())
        except (OSError, json.JSONDecodeError):
            return False
        for name, expected in marker["files"].items():
            path = directory / name
            if problem := file_problem(path, expected["size"], expected["sha256"]):
                log.warning("artifact %s is %s: rebuilding stage %s", path, problem, stage)
                return False
        return True

    def metrics(self, stage: str, key: str) -> dict[str, float]:
        return stage_metrics(self.path(stage, key))

    @contextmanager
    def write(self, stage: str, key: str, publish: bool = True,
              provenance: dict[str, str] | None = None) -> Iterator[tuple[Path, dict[str, float]]]:
        """Yield (temp dir, metrics dict to fill); on success mark complete and rename into place, else discard.

        `publish=False` (a DDP rank other than zero): the temp dir is always discarded and nothing else touched.
        `provenance` (the configuration-only key and the code version) goes into the completion marker.
        """
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if publish:
            remove_abandoned(final.parent, f".tmp-{key}-")
            if final.exists():
                shutil.rmtree(final)
        tmp = final.parent / f".tmp-{key}-{writer_id()}"
        alive = FileLock(f"{tmp}.lock")   # held while this writer lives: how others tell a leftover from live work
        alive.acquire()
        tmp.mkdir()
        metrics: dict[str, float] = {}
        try:
            yield tmp, metrics
            if not publish:
                return
            files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            write_json_atomic(tmp / MARKER, {"stage": stage, "key": key, "metrics": metrics, "files": files,
                                             **(provenance or {})})
            try:
                os.rename(tmp, final)
            except OSError:
                if not self.is_complete(stage, key):
                    raise
            shutil.rmtree(self.checkpoints(stage, key), ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            alive.release()
            Path(f"{tmp}.lock").unlink(missing_ok=True)


def remove_abandoned(directory: Path, prefix: str) -> None:
    """Remove the temp dirs `<prefix>*` whose writer is gone: their lock can be taken (on any host's behalf)."""
    for leftover in directory.glob(f"{prefix}*"):
        if not leftover.is_dir():   # its own lock file, or a stray one
            continue
        lock = FileLock(f"{leftover}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue   # a live writer, here or on another host
        try:
            shutil.rmtree(leftover, ignore_errors=True)
        finally:
            lock.release()
            Path(f"{leftover}.lock").unlink(missing_ok=True)
