"""Run jobs on this machine, `workers` at a time (one `dtd train` process each), resumably.

Idempotent: a job with a record is done and skipped; a job whose run folder holds a checkpoint is resumed
with `dtd train --resume`; anything else starts fresh. Kill it at any time (kill -9 included) and start it
again. `run_job` is also what one Ray task runs (dtd.sweep.ray_backend)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dtd.errors import DtdError
from dtd.paths import RunLock
from dtd.sweep.claim import Claim
from dtd.sweep.provenance import code_root, version
from dtd.sweep.record import Job, command, done, log_start, save_record

_GIT_LOCK = threading.Lock()
_CHILDREN: set[subprocess.Popen] = set()  # the `dtd train` processes running now
STOPPING = threading.Event()  # set on SIGTERM / Ctrl-C: start nothing more


@dataclass
class Where:
    """Where a sweep's jobs run and leave their files, and how a job becomes a command line."""
    runs: Path  # run folders with checkpoints (large; on storage every node shares, under Ray)
    records: Path  # one small record folder per finished job
    root: Path = field(default_factory=code_root)  # git names the commit here
    cwd: Path | None = None  # where `dtd train` runs (relative paths in its arguments); default: root
    commit_records: bool = False  # git-commit each new record folder as soon as it is written
    command: Callable[[Job, Path], list[str]] = command
    poll_s: float = 2.0  # how often a job claimed by another process is looked at again


def commit_record(path: Path, repo: Path | None = None) -> bool:
    """`git add` + `git commit` of one record folder only (other staged changes stay staged), in the repository
    that holds it (a grid may run from a worktree of fixed code and keep its records in the main checkout); a
    warning, not an error, when git is busy or refuses (the record stays on disk and is committed next time)."""
    if repo is None:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True, text=True)
        repo = Path(top.stdout.strip()) if top.returncode == 0 else code_root()
    rel = os.path.relpath(path, repo)
    with _GIT_LOCK:
        for attempt in range(3):
            add = subprocess.run(["git", "add", "--", rel], cwd=repo, capture_output=True, text=True)
            ok = add.returncode == 0 and subprocess.run(
                ["git", "commit", "-q", "-m", f"record {rel}", "--", rel], cwd=repo, capture_output=True,
                text=True).returncode == 0
            if ok:
                return True
            time.sleep(2 + 3 * attempt)  # another git process holds the index lock
    print(f"warning: could not commit {rel}; commit it by hand", flush=True)
    return False


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (a killed Ray worker or sweep
    must not leave a `dtd train` holding the run folder that the job's retry resumes)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a kill of the whole process group still stops it
        pass


def run_job(job: Job, where: Where, index: int, total: int) -> int:
    """Run one job unless it has a record or another live process has claimed it (then wait for that one)."""
    records = where.records
    if done(job, records):
        return 0
    claim = Claim(where.runs, job.name)
    waited = False
    while not claim.try_acquire():
        if done(job, records) or STOPPING.is_set():
            return 0 if done(job, records) else 130
        if not waited:
            print(f"[{index}/{total}] waiting: {job.name} is claimed by {claim.holder()}", flush=True)
            waited = True
        time.sleep(where.poll_s)
    with claim:
        if done(job, records):  # its previous claimant finished it
            return 0
        return _run_claimed(job, where, index, total)


def _run_claimed(job: Job, where: Where, index: int, total: int) -> int:
    runs, records = where.runs, where.records
    log = runs / "logs" / f"{job.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{index}/{total}] start {job.name}", flush=True)
    start = time.time()
    if job.step is not None:
        code = _run_step(job, where, log, start)
    else:
        cmd = where.command(job, runs)
        if "--resume" in cmd:
            _wait_for_run_lock(runs / job.name)
        segments = log_start(runs, job, "--resume" in cmd, version(where.root))
        threads = str(int(job.resources.get("num_cpus", 1)))
        env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        with open(log, "a") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=where.cwd or where.root,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            _CHILDREN.add(child)
            code = child.wait()
            _CHILDREN.discard(child)
        if code == 0:
            save_record(job, runs / job.name, records, start, ["dtd", *cmd[3:]], segments)
    took = time.time() - start
    if code == 0 and where.commit_records:
        commit_record(records / job.name)
    what = "done" if code == 0 else "stopped" if STOPPING.is_set() else f"FAILED ({code}), see {log}"
    print(f"[{index}/{total}] {what} {job.name} in {took:.0f} s", flush=True)
    return code


def _wait_for_run_lock(run_dir: Path, timeout: float = 60.0) -> None:
    """A killed worker's `dtd train` dies a moment after it (SIGTERM from _die_with_parent): wait for its run lock
    rather than fail the retry that resumes the same folder."""
    until = time.time() + timeout
    while True:
        try:
            return RunLock(run_dir).check_free()
        except DtdError:
            if time.time() > until:
                return  # `dtd train --resume` says who holds it
            time.sleep(0.5)


def _run_step(job: Job, where: Where, log: Path, start: float) -> int:
    try:
        save_record(job, None, where.records, start, [], [{**version(where.root), "resume": False}],
                    write=lambda out: job.step(where.runs, out))
    except Exception:  # a failed step is reported like a failed run; the others go on
        with open(log, "a") as fh:
            fh.write(traceback.format_exc())
        return 1
    return 0


def stop_children() -> None:
    """Stop the running `dtd train` processes (their checkpoints stay) and start nothing more."""
    STOPPING.set()
    for child in list(_CHILDREN):
        child.terminate()
    for child in list(_CHILDREN):
        child.wait()
