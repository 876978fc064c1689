"""Rank detection before DDP starts: the cluster environment Lightning detects decides which process is rank zero."""

from __future__ import annotations

import os

import pytest

from pit.distributed import is_rank_zero

SRUN = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "2", "SLURM_JOB_NAME": "pit"}
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")
LAUNCH_PREFIXES = ("SLURM_", "LSB_", "JSM_", "OMPI_", "PMI_")


@pytest.mark.parametrize("env, rank_zero", [
    ({}, True),                                                                              # a plain process
    ({**SRUN, "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}, True),
    ({**SRUN, "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0"}, False),      # srun, second task
    ({**SRUN, "SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_NODEID": "1"}, False),      # first task of node 1
    ({**SRUN, "SLURM_JOB_NAME": "interactive", "SLURM_PROCID": "1"}, True),                 # salloc shell: not srun
    ({"TORCHELASTIC_RUN_ID": "r", "RANK": "3", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}, False),  # torchrun, node 1
    ({"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"}, False),                       # Lightning's launcher
    ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
])
def test_rank_zero_follows_the_cluster_environment(env: dict[str, str], rank_zero: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Under an `srun`-launched job only SLURM_PROCID 0 is rank zero, not every task that lacks RANK."""
    for name in [n for n in os.environ if n in LAUNCH_VARIABLES or n.startswith(LAUNCH_PREFIXES)]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert is_rank_zero() is rank_zero
