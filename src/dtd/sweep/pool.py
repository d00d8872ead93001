"""The local backend: every job without a record, `workers` at a time, in list order, steps after their needs."""

from __future__ import annotations

import threading

from dtd.sweep.local import STOPPING, Where, run_job, stop_children
from dtd.sweep.record import Job, done, stale


def announce(jobs: list[Job], where: Where) -> list[Job]:
    """Print what is done and what is stale; the jobs still to run."""
    todo = [j for j in jobs if not done(j, where.records)]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already have a record; {len(todo)} to run", flush=True)
    old = [j.name for j in jobs if stale(j, where.records)]
    if old:
        print(f"warning: {len(old)} records were made with other arguments (remove them to rerun): {old}", flush=True)
    return todo


def summary(todo: list[Job], codes: dict[str, int]) -> int:
    failed = [j.name for j in todo if codes.get(j.name)]
    print(f"{len(todo) - len(failed)} jobs done, {len(failed)} failed or skipped" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


def run_all(jobs: list[Job], where: Where, workers: int) -> int:
    """Run every job without a record, `workers` at a time, each worker taking the first job in list order whose
    `needs` are done; 1 if any failed or could not run, 130 when interrupted (run it again to resume)."""
    records = where.records
    STOPPING.clear()
    todo = announce(jobs, where)
    pending, running, codes = list(todo), set(), {}
    started = [0]
    cond = threading.Condition()

    def blocked(job: Job) -> bool:  # a need that will never get a record in this session
        return any(not done(n, records) and n not in running and all(p.name != n for p in pending)
                   for n in job.needs)

    def next_job() -> tuple[Job, int] | None:
        with cond:
            while True:
                for job in [j for j in pending if blocked(j)]:
                    pending.remove(job)
                    codes[job.name] = 3
                    print(f"skipped {job.name}: needs {', '.join(job.needs)}, not all of which finished", flush=True)
                job = next((j for j in pending if all(done(n, records) for n in j.needs)), None)
                if STOPPING.is_set() or (job is None and not pending):
                    return None
                if job is not None:
                    pending.remove(job)
                    running.add(job.name)
                    started[0] += 1
                    return job, started[0]
                cond.wait()

    def worker() -> None:
        while (picked := next_job()) is not None:
            job, index = picked
            code = run_job(job, where, index, len(todo))
            with cond:
                running.discard(job.name)
                codes[job.name] = code
                cond.notify_all()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(0.5)
    except KeyboardInterrupt:  # also SIGTERM (the CLI maps it): stop the children; their checkpoints stay
        stop_children()
        print("interrupted: run the same command again to resume", flush=True)
        return 130
    return summary(todo, codes)
