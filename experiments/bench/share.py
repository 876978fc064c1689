"""Two pit jobs on one machine (#32): the wall time of one job alone against two started together, each given its
share of the cores with `threads=` (what pit/threads.py sets for the jobs of one parallel launch).

    python experiments/bench/share.py [--out experiments/bench/results/share.json] [pit.run overrides...]

Each job is `python -m pit.run` with its own cache (nothing is reused between them) and W&B off. The claim is the
ratio `together / alone` (target <= 2.2): two jobs that share the cores cleanly take about twice one job's work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OVERRIDES = ["objective=sft_only", "logger=none", "trainer.enable_progress_bar=false"]


def start(overrides: list[str], work: Path, name: str, threads: int) -> subprocess.Popen:
    """One pit job with its own cache and output dir under `work`."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    command = [sys.executable, "-m", "pit.run", *overrides, f"threads={threads}",
               f"paths.cache_dir={work / name / 'cache'}", f"hydra.run.dir={work / name / 'out'}"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed(jobs: list[subprocess.Popen]) -> float:
    """Seconds until every job has ended; a job that fails stops the bench with its error."""
    begin = time.perf_counter()
    for job in jobs:
        _, err = job.communicate()
        if job.returncode:
            sys.exit(f"a job failed (rc {job.returncode}):\n{err[-2000:]}")
    return round(time.perf_counter() - begin, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/bench/results/share.json")
    args, overrides = parser.parse_known_args()
    overrides = overrides or DEFAULT_OVERRIDES
    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        alone = timed([start(overrides, work, "alone", cpus)])
        together = timed([start(overrides, work, f"job{i}", max(1, cpus // 2)) for i in range(2)])
    result = {"overrides": overrides, "cpus": cpus, "alone_seconds": alone, "two_together_seconds": together,
              "ratio": round(together / alone, 2), "target": 2.2, "met": together / alone <= 2.2}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
