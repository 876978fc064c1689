"""CPU threads per job: torch's intra-op threads set from the CPUs this job may use and the jobs its launch runs beside
it, so that parallel jobs share the cores instead of each spinning as many threads as the machine has cores.

threads = the config's `threads` when set, else this job's CPUs (its affinity mask, capped by Slurm's
`SLURM_CPUS_PER_TASK`) divided by the jobs its launch runs at once (`hydra.launcher.n_jobs` of a joblib sweep,
else 1). It depends on how the job was launched, never on what else happens to run, so a run's numbers stay
reproducible: the thread count changes how sums are split, hence their last bits. Jobs started separately on one
machine (two shells) cannot see each other: give each `threads=<CPUs / jobs>`. Setting a number explicitly also
turns off MKL's dynamic choice of threads, which torch otherwise leaves on.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def job_cpus() -> int:
    """CPUs this process may run on (its affinity mask: a container's, taskset's), capped by `SLURM_CPUS_PER_TASK`."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cpus, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cpus


def parallel_jobs(n_jobs: int | None, cpus: int) -> int:
    """Jobs a launcher runs at once for its `n_jobs` (joblib's meaning: -1 one per CPU, -2 all CPUs but one...)."""
    if not n_jobs:
        return 1
    return n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)


def launch_jobs(cpus: int) -> int:
    """Jobs the launch of this one runs at once: a parallel sweep's `hydra.launcher.n_jobs`, else 1."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    return parallel_jobs(HydraConfig.get().launcher.get("n_jobs"), cpus)


def threads_per_job(cpus: int, jobs: int) -> int:
    """An equal share of `cpus` for each of `jobs` jobs, at least one thread."""
    return max(1, cpus // max(1, jobs))


def set_threads(setting: int | None) -> int:
    """Set torch's intra-op threads to `setting`, else to `OMP_NUM_THREADS` where the launcher set it (torchrun: 1
    per rank), else to this job's share of its CPUs, never above torch's own default (physical cores, not
    hyper-threads); return the number."""
    import torch

    global _TORCH_DEFAULT
    _TORCH_DEFAULT = _TORCH_DEFAULT or torch.get_num_threads()   # before anything of ours changed it
    cpus, omp = job_cpus(), os.environ.get("OMP_NUM_THREADS", "")
    jobs = launch_jobs(cpus) * int(os.environ.get("LOCAL_WORLD_SIZE", "1"))   # DDP ranks on this node share it
    if setting:
        threads, why = setting, f"threads={setting}"
    elif omp.isdigit() and int(omp) > 0:
        threads, why = int(omp), f"OMP_NUM_THREADS={omp}"
    else:
        threads = min(_TORCH_DEFAULT, threads_per_job(cpus, jobs))
        why = f"{cpus} CPUs, {jobs} job(s) launched together"
    log.info("torch threads: %d (%s)", threads, why)
    torch.set_num_threads(threads)
    return threads


_TORCH_DEFAULT = 0   # torch's thread count when the process started, read at the first `set_threads`
