"""Which process of a multi-process (DDP) job this is, and waiting for the others.

Lightning's DDP launcher starts one process per device, each running the whole Hydra job; every rank takes
part in every `fit`, but only global rank zero publishes artifacts, writes results.json and logs to W&B.
A job can also be launched by a cluster (`srun`, `torchrun`, `jsrun`, `mpirun`): the rank then comes from the
cluster environment Lightning itself detects, so the process is ranked the same way before and inside `fit`.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.plugins.environments import (
    ClusterEnvironment,
    LightningEnvironment,
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)

# The order in which Lightning's Trainer detects them (torchrun inside a SLURM allocation is torchrun).
CLUSTER_ENVIRONMENTS: tuple[type[ClusterEnvironment], ...] = (
    TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment)


def cluster_environment() -> ClusterEnvironment:
    """The cluster environment Lightning's Trainer picks for this process; LightningEnvironment when none is found."""
    return next((env() for env in CLUSTER_ENVIRONMENTS if env.detect()), LightningEnvironment())


def is_rank_zero() -> bool:
    """Global rank zero, or a single-process job; before DDP starts, as the cluster environment ranks this process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    environment = cluster_environment()
    if isinstance(environment, LightningEnvironment):   # Lightning's own launcher: its global rank is set in `fit`
        return environment.node_rank() == 0 and environment.local_rank() == 0
    return environment.global_rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single-process job)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def single_process(trainer: Any) -> bool:
    """Whether a `trainer=` config runs one process (one device, one node): only such a job takes stage locks."""
    return str(trainer.get("devices", 1)) == "1" and int(trainer.get("num_nodes", 1) or 1) == 1
