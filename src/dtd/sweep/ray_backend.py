"""The Ray backend: each job one Ray task with its resources, on whatever cluster `ray.init` reaches.

Runs and records must be on storage every node sees (NFS, a shared volume): a job's run folder is where its
checkpoints are, so a task retried on another node after its node died (Ray retries tasks whose worker dies)
resumes from the last checkpoint. The claim file (dtd.sweep.claim) keeps a job from running twice, also when
two sweeps, or a retry and a slow original, race. Needs `pip install "decision-transducer[ray]"`."""

from __future__ import annotations

import socket

from dtd.errors import DtdError
from dtd.sweep.local import Where, run_job
from dtd.sweep.pool import announce, summary
from dtd.sweep.record import Job, done

RETRIES = 3  # a task whose worker (or node) dies is run again, up to this many times; it resumes


def _task(job: Job, where: Where, index: int, total: int, *needs: int) -> int:
    """One job in a Ray worker (after the tasks of its `needs`, whose exit codes arrive as arguments)."""
    if not all(done(n, where.records) for n in job.needs):
        print(f"skipped {job.name}: needs {', '.join(job.needs)}, not all of which finished", flush=True)
        return 3
    return run_job(job, where, index, total)


def connect(address: str) -> None:
    """Join the cluster at `address` ("auto": the one this node belongs to, e.g. started by `ray start` or a
    KubeRay / Slurm launcher; "local": start one on this machine) unless this process already joined one."""
    try:
        import ray
    except ImportError:
        raise DtdError('--ray needs Ray: pip install "decision-transducer[ray]"') from None
    if ray.is_initialized():
        return
    _check_reachable(address)
    try:
        ray.init(address=None if address == "local" else address, log_to_driver=True)
    except ConnectionError as exc:
        raise DtdError(f"--ray {address}: no Ray cluster there ({str(exc).splitlines()[0]}); start one with "
                       "`ray start --head` or pass --ray local") from None


def _check_reachable(address: str) -> None:
    """A HOST:PORT nobody listens on: one line now (Ray itself would retry the connection for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise DtdError(f"--ray {address}: no Ray cluster there ({exc.strerror or exc}); start one with "
                       "`ray start --head` or pass --ray local") from None


def run_ray(jobs: list[Job], where: Where, address: str = "auto") -> int:
    """Submit every job without a record as a Ray task (num_cpus / num_gpus from the job's resources, retried
    when its worker dies) and wait for all; the same exit codes as the local backend."""
    import ray

    connect(address)
    todo = announce(jobs, where)
    remote = ray.remote(_task)
    refs: dict[str, ray.ObjectRef] = {}
    for index, job in enumerate(todo, 1):
        opts = {"num_cpus": job.resources.get("num_cpus", 1), "max_retries": RETRIES, "name": job.name}
        if job.resources.get("num_gpus"):
            opts["num_gpus"] = job.resources["num_gpus"]
        needs = [refs[n] for n in job.needs if n in refs]
        refs[job.name] = remote.options(**opts).remote(job, where, index, len(todo), *needs)
    pending = {ref: name for name, ref in refs.items()}
    codes: dict[str, int] = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                name = pending.pop(ref)
                try:
                    codes[name] = ray.get(ref)
                except ray.exceptions.RayError as exc:  # retries exhausted, or a need failed
                    print(f"FAILED {name}: {str(exc).splitlines()[0]}", flush=True)
                    codes[name] = 1
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)  # the tasks' `dtd train` children die with their workers
        print("interrupted: run the same command again to resume", flush=True)
        return 130
    return summary(todo, codes)
