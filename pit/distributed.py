"""Which process of a multi-process (DDP) job this is, and waiting for the others.

Lightning's DDP launcher starts one process per device, each running the whole Hydra job; every rank takes
part in every `fit`, but only global rank zero publishes artifacts, writes results.json and logs to W&B.
"""

from __future__ import annotations

import os

import torch

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")


def is_rank_zero() -> bool:
    """Global rank zero, or a single-process job (before DDP starts, launched ranks carry non-zero env ranks)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return all(int(os.environ.get(name, "0")) == 0 for name in RANK_VARIABLES)


def barrier() -> None:
    """Wait for every rank (a no-op in a single-process job)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
