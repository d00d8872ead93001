"""The engine behind the experiment scripts: run `dtd train` jobs a few at a time, resumably, and keep
each finished run's small record in git.

A job is one `dtd train` command, or a Python step (`Job.step`) that reads the checkpoints of jobs it
`needs` (e.g. the attention analysis of two trained runs). A train job's run folder (with checkpoints)
lives under `--runs` (outside git); when it finishes, its record -- config.yaml, metrics.jsonl, eval.json
and record.json (the commit the code ran at, wall time, command) -- is copied to `<records>/<job>/`, a
tracked folder. A step writes its small files straight into its record folder. Idempotent: a job with a
record is done and skipped; a job whose run folder holds a checkpoint is resumed with `dtd train --resume`;
anything else starts fresh (`--force` over a folder left without a checkpoint). Kill it at any time and
start it again, on this machine or after a fresh clone. `--commit-records` also commits each new record
(only that folder) so that an interrupted session loses nothing it finished.
"""

from __future__ import annotations

import importlib.metadata
import json
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

ROOT = Path(__file__).resolve().parents[1]
RECORD_FILES = ("config.yaml", "metrics.jsonl", "eval.json")
RECORD = "record.json"  # written last, inside a folder that is renamed into place: its presence = done


@dataclass
class Job:
    name: str  # unique within a study: the run folder's and the record's name
    args: tuple[str, ...]  # `dtd train` arguments (everything but the output location)
    tags: dict[str, str] = field(default_factory=dict)  # what the tables group by (model, dataset, ...)
    # A Python step instead of `dtd train`: step(runs, out) writes its files into `out` and returns the
    # equivalent command lines (for the record). It runs once every job in `needs` has a record.
    step: Callable[[Path, Path], list[str]] | None = None
    needs: tuple[str, ...] = ()


def done(job: Job | str, records: Path) -> bool:
    return (records / (job if isinstance(job, str) else job.name) / RECORD).is_file()


def stale(job: Job, records: Path) -> bool:
    """A record made with other `dtd train` arguments than the job's now (say, after RECIPE changed): it
    still counts as done -- removing it is a human decision -- but --list and the tables say so."""
    if not done(job, records):
        return False
    args = json.loads((records / job.name / RECORD).read_text()).get("args")
    return args is not None and args != list(job.args)


def _git(*a: str) -> str:
    try:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:  # no git on this machine
        return ""


# A copy of the tree (a cluster node, a GPU box given the files only) names the commit it was copied from in
# DTD_COMMIT (and DTD_CODE, the last commit that changed src/; default DTD_COMMIT); these win over git, whose
# history there may be missing or another checkout's.
FROM_ENV = ("DTD_COMMIT", "DTD_CODE")


def commit() -> str:
    """The commit the code runs at (with '+dirty' when tracked files under src/ differ from it)."""
    if os.environ.get(FROM_ENV[0]):
        return os.environ[FROM_ENV[0]]
    head = _git("rev-parse", "HEAD") or "unknown"
    return head + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no", "--", "src") else "")


def code_commit() -> str:
    """The last commit that changed what a run trains (src/, presets included), '+dirty' if they differ from it: unlike
    HEAD it stays put while --commit-records adds record commits, so runs of the same code name one commit."""
    if os.environ.get(FROM_ENV[0]):
        return os.environ.get(FROM_ENV[1]) or os.environ[FROM_ENV[0]]
    last = _git("log", "-1", "--format=%H", "--", "src") or "unknown"
    return last + ("+dirty" if _git("status", "--porcelain", "--untracked-files=no", "--", "src") else "")


def machine() -> str:
    """The CPU and core count (and GPU, where there is one: `dtd train` then trains on it) a run trained on:
    throughput in the records is only comparable per machine."""
    from dtd.bench.common import cpu_model

    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = "?"
    try:
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        gpus = []
    gpu = next((f", {g.strip()}" for g in gpus if g.strip()), "")
    return f"{cpu_model()}, {os.cpu_count()} cores{gpu}, torch {torch}"


def version() -> dict[str, str]:
    return {"commit": commit(), "code": code_commit(), "machine": machine()}


def command(job: Job, runs: Path) -> list[str]:
    run_dir = runs / job.name
    dtd = [sys.executable, "-m", "dtd", "train"]
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return [*dtd, "--resume", str(run_dir), "--no-progress"]
    return [*dtd, *job.args, "--out_dir", str(runs), "--run_name", job.name, "--force", "--no-progress"]


def _segments(runs: Path, job: Job, resume: bool, at: dict[str, str]) -> list[dict]:
    """Log this start of a job (its commit; a fresh start forgets earlier ones); every start so far."""
    path = runs / "logs" / f"{job.name}.segments.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines() if resume and path.is_file() else []
    lines.append(json.dumps({**at, "resume": resume}))
    path.write_text("\n".join(lines) + "\n")
    return [json.loads(line) for line in lines]


def save_record(job: Job, run_dir: Path | None, records: Path, started: float, cmd: list[str],
                segments: list[dict] | None = None, write: Callable[[Path], list[str]] | None = None) -> Path:
    """Copy the run's small files (or let `write` make them) into records/<name>/, written under a
    temporary name then renamed, so a record is complete or absent. `commit` is the commit the job
    started at (`code`: the last commit that changed src/ then; `machine`: where the last start ran);
    `segments` lists every start (one per resume) when there was more than one; wall time runs from
    `started` (the last start) to now."""
    final = records / job.name
    tmp = records / f".{job.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if write is not None:
        cmd = write(tmp)
    else:
        for name in RECORD_FILES:
            shutil.copyfile(run_dir / name, tmp / name)
    segments = segments or [{**version(), "resume": False}]
    seconds = time.time() - started
    info = {"name": job.name, "tags": job.tags, "commit": segments[0]["commit"], "code": segments[0].get("code"),
            "machine": segments[-1].get("machine"), "wall_seconds": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": cmd, "args": list(job.args)}
    if len(segments) > 1:
        info["segments"] = segments  # wall_seconds covers the last one only
    (tmp / RECORD).write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


_GIT_LOCK = threading.Lock()
_CHILDREN: set[subprocess.Popen] = set()  # the `dtd train` processes running now
_STOPPING = threading.Event()  # set on SIGTERM / Ctrl-C: start nothing more


def commit_record(path: Path, repo: Path | None = None) -> bool:
    """`git add` + `git commit` of one record folder only (other staged changes stay staged), in the repository
    that holds it (a grid may run from a worktree of fixed code and keep its records in the main checkout); a
    warning, not an error, when git is busy or refuses (the record stays on disk and is committed next time)."""
    if repo is None:
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=path.parent, capture_output=True, text=True)
        repo = Path(top.stdout.strip()) if top.returncode == 0 else ROOT
    rel = os.path.relpath(path, repo)
    with _GIT_LOCK:
        for attempt in range(3):
            add = subprocess.run(["git", "add", "--", rel], cwd=repo, capture_output=True, text=True)
            done_ = add.returncode == 0 and subprocess.run(
                ["git", "commit", "-q", "-m", f"record {rel}", "--", rel], cwd=repo, capture_output=True,
                text=True).returncode == 0
            if done_:
                return True
            time.sleep(2 + 3 * attempt)  # another git process holds the index lock
    print(f"warning: could not commit {rel}; commit it by hand", flush=True)
    return False


def run_job(job: Job, runs: Path, records: Path, index: int, total: int, git_commit: bool = False) -> int:
    if done(job, records):
        return 0
    log = runs / "logs" / f"{job.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{index}/{total}] start {job.name}", flush=True)
    start = time.time()
    if job.step is not None:
        code = _run_step(job, runs, records, log, start)
    else:
        cmd = command(job, runs)
        segments = _segments(runs, job, "--resume" in cmd, version())
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        with open(log, "a") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            _CHILDREN.add(child)
            code = child.wait()
            _CHILDREN.discard(child)
        if code == 0:
            save_record(job, runs / job.name, records, start, ["dtd", *cmd[3:]], segments)
    took = time.time() - start
    if code == 0 and git_commit:
        commit_record(records / job.name)
    what = "done" if code == 0 else "stopped" if _STOPPING.is_set() else f"FAILED ({code}), see {log}"
    print(f"[{index}/{total}] {what} {job.name} in {took:.0f} s", flush=True)
    return code


def _run_step(job: Job, runs: Path, records: Path, log: Path, start: float) -> int:
    try:
        save_record(job, None, records, start, [], [{**version(), "resume": False}],
                    write=lambda out: job.step(runs, out))
    except Exception:  # a failed step is reported like a failed run; the others go on
        shutil.rmtree(records / f".{job.name}.tmp", ignore_errors=True)
        with open(log, "a") as fh:
            fh.write(traceback.format_exc())
        return 1
    return 0


def run_all(jobs: list[Job], runs: Path, records: Path, workers: int, git_commit: bool = False) -> int:
    """Run every job without a record, `workers` at a time (one torch thread each), each worker taking the
    first job in list order whose `needs` are done; 1 if any failed or could not run."""
    if not os.environ.get("MINARI_DATASETS_PATH"):
        print("set MINARI_DATASETS_PATH to the folder holding zoo/hopper/... (../shared/datasets)", file=sys.stderr)
        return 2
    todo = [j for j in jobs if not done(j, records)]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already have a record; {len(todo)} to run", flush=True)
    old = [j.name for j in jobs if stale(j, records)]
    if old:
        print(f"warning: {len(old)} records were made with other arguments (remove them to rerun): {old}", flush=True)
    pending, running, codes = list(todo), set(), {}
    started = [0]
    cond = threading.Condition()

    def blocked(job: Job) -> bool:  # a need that will never get a record in this session
        return any(not done(n, records) and n not in running and all(p.name != n for p in pending)
                   for n in job.needs)

    def worker() -> None:
        while True:
            with cond:
                while True:
                    for job in [j for j in pending if blocked(j)]:
                        pending.remove(job)
                        codes[job.name] = 3
                        print(f"skipped {job.name}: needs {', '.join(job.needs)}, not all of which finished",
                              flush=True)
                    job = next((j for j in pending if all(done(n, records) for n in j.needs)), None)
                    if _STOPPING.is_set():
                        return
                    if job is not None:
                        pending.remove(job)
                        running.add(job.name)
                        started[0] += 1
                        index = started[0]
                        break
                    if not pending:
                        return
                    cond.wait()
            code = run_job(job, runs, records, index, len(todo), git_commit)
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
    except KeyboardInterrupt:  # also SIGTERM (see main): stop the children; their checkpoints stay
        _STOPPING.set()
        for child in list(_CHILDREN):
            child.terminate()
        for child in list(_CHILDREN):
            child.wait()
        print("interrupted: run the same command again to resume", flush=True)
        return 130
    failed = [j.name for j in todo if codes.get(j.name)]
    print(f"{len(todo) - len(failed)} jobs done, {len(failed)} failed or skipped" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


def main(description: str, jobs: list[Job], study: str, argv: list[str] | None = None) -> int:
    """The command line every study script shares: --workers, --list, --only, --runs, --records, --commit-records."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one torch thread each (default 2)")
    parser.add_argument("--list", action="store_true", help="print the jobs in run order (done or todo) and exit")
    parser.add_argument("--only", default="", help="only jobs whose name contains this text")
    parser.add_argument("--runs", default=str(ROOT / "runs" / study), help="run folders with checkpoints (untracked)")
    parser.add_argument("--records", default=str(ROOT / "results" / study), help="the tracked records folder")
    parser.add_argument("--commit-records", action="store_true",
                        help="git-commit each new record folder (that folder only) as soon as it is written")
    args = parser.parse_args(argv)
    runs, records = Path(args.runs).resolve(), Path(args.records).resolve()
    todo = [j for j in jobs if args.only in j.name]
    if args.list:
        for job in todo:
            state = "stale" if stale(job, records) else "done" if done(job, records) else "todo"
            after = f", after {' and '.join(job.needs)}" if job.needs else ""
            what = f"(step{after})" if job.step is not None else " ".join(job.args)
            print(state, job.name, what)
        return 0
    import signal

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill PID` stops the children too
    return run_all(todo, runs, records, args.workers, args.commit_records)
