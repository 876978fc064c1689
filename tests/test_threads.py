"""Jobs that share a machine (#32): torch threads per job from its CPUs and the jobs launched with it."""

from __future__ import annotations

import pytest
import torch

from pit.threads import job_cpus, parallel_jobs, set_threads, threads_per_job


@pytest.mark.parametrize("cpus, jobs, expected", [(2, 1, 2), (2, 2, 1), (2, 5, 1), (16, 3, 5), (8, 0, 8)])
def test_each_job_gets_an_equal_share_of_at_least_one_thread(cpus: int, jobs: int, expected: int) -> None:
    assert threads_per_job(cpus, jobs) == expected


@pytest.mark.parametrize("n_jobs, cpus, expected", [(None, 8, 1), (2, 8, 2), (-1, 8, 8), (-2, 8, 7), (-9, 8, 1)])
def test_a_joblib_sweeps_n_jobs_counts_as_joblib_reads_it(n_jobs: int | None, cpus: int, expected: int) -> None:
    assert parallel_jobs(n_jobs, cpus) == expected


def test_slurm_caps_the_cpus_of_a_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert job_cpus() == 1


def test_the_setting_then_the_launchers_variables_then_the_cpus_decide(monkeypatch: pytest.MonkeyPatch) -> None:
    """`threads=` wins; else OMP_NUM_THREADS (torchrun sets 1 per rank); else the CPUs shared by the ranks of this
    node (LOCAL_WORLD_SIZE), never above torch's own default."""
    import pit.threads

    monkeypatch.setattr(pit.threads, "_TORCH_DEFAULT", 64)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(None) == job_cpus() == torch.get_num_threads()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert set_threads(None) == max(1, job_cpus() // 2)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads(None) == 1
        monkeypatch.setattr(pit.threads, "_TORCH_DEFAULT", 1)
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        assert set_threads(None) == 1   # not above torch's default (physical cores)
    finally:
        torch.set_num_threads(before)
