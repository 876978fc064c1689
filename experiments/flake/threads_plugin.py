"""pytest plugin (`-p threads_plugin`): this process keeps torch's own thread count, the jobs it starts get
`SUBPROCESS_THREADS` (as OMP_NUM_THREADS) -- the mismatch that made the takeover test flaky before pit set
threads itself. Without SUBPROCESS_THREADS it changes nothing."""

from __future__ import annotations

import os


def pytest_configure(config: object) -> None:
    if threads := os.environ.pop("SUBPROCESS_THREADS", ""):
        import torch

        torch.get_num_threads()                  # fixes this process's count before the variable exists
        os.environ["OMP_NUM_THREADS"] = threads  # read by the jobs the tests start
