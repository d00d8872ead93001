"""The engine behind the experiment scripts: run `dtd train` jobs a few at a time, resumably, and keep
each finished run's small record in git.

A job is one `dtd train` command. Its run folder (with checkpoints) lives under `--runs` (outside git);
when it finishes, its record -- config.yaml, metrics.jsonl, eval.json and record.json (the commit the
code ran at, wall time, command) -- is copied to `<records>/<job>/`, a tracked folder. Idempotent:
a job with a record is done and skipped; a job whose run folder holds a checkpoint is resumed with
`dtd train --resume`; anything else starts fresh (`--force` over a folder left without a checkpoint).
Kill it at any time and start it again, on this machine or after a fresh clone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD_FILES = ("config.yaml", "metrics.jsonl", "eval.json")


@dataclass
class Job:
    name: str  # unique within a study: the run folder's and the record's name
    args: tuple[str, ...]  # `dtd train` arguments (everything but the output location)
    tags: dict[str, str] = field(default_factory=dict)  # what the tables group by (model, dataset, ...)


def commit() -> str:
    """The commit the code runs at (with '+dirty' when tracked files differ from it)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", "src") else "")


def command(job: Job, runs: Path) -> list[str]:
    run_dir = runs / job.name
    dtd = [sys.executable, "-m", "dtd", "train"]
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return [*dtd, "--resume", str(run_dir), "--no-progress"]
    return [*dtd, *job.args, "--out_dir", str(runs), "--run_name", job.name, "--force", "--no-progress"]


def save_record(job: Job, run_dir: Path, records: Path, seconds: float, cmd: list[str]) -> Path:
    """Copy the run's small files into records/<name>/ (written under a temporary name, then renamed)."""
    final = records / job.name
    tmp = records / f".{job.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in RECORD_FILES:
        shutil.copyfile(run_dir / name, tmp / name)
    info = {"name": job.name, "tags": job.tags, "commit": commit(), "wall_seconds": round(seconds, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": cmd[2:]}
    (tmp / "record.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def run_job(job: Job, runs: Path, records: Path, index: int, total: int) -> int:
    if (records / job.name / "eval.json").is_file():
        return 0
    cmd = command(job, runs)
    log = runs / "logs" / f"{job.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print(f"[{index}/{total}] start {job.name}", flush=True)
    start = time.time()
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    took = time.time() - start
    if code == 0:
        save_record(job, runs / job.name, records, took, cmd)
    print(f"[{index}/{total}] {'done' if code == 0 else f'FAILED ({code}), see {log}'} {job.name} in {took:.0f} s",
          flush=True)
    return code


def run_all(jobs: list[Job], runs: Path, records: Path, workers: int) -> int:
    """Run every job without a record, `workers` at a time (one torch thread each); 1 if any failed."""
    if not os.environ.get("MINARI_DATASETS_PATH"):
        print("set MINARI_DATASETS_PATH to the folder holding zoo/hopper/... (../shared/datasets)", file=sys.stderr)
        return 2
    todo = [j for j in jobs if not (records / j.name / "eval.json").is_file()]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} jobs already have a record; {len(todo)} to run", flush=True)
    with ThreadPoolExecutor(workers) as pool:
        codes = list(pool.map(lambda ij: run_job(ij[1], runs, records, ij[0] + 1, len(todo)), enumerate(todo)))
    failed = [j.name for j, code in zip(todo, codes) if code]
    print(f"{len(todo) - len(failed)} runs done, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


def main(description: str, jobs: list[Job], study: str) -> int:
    """The command line every study script shares: --workers, --list, --only, --runs, --records."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one torch thread each (default 2)")
    parser.add_argument("--list", action="store_true", help="print the jobs (done or to do) and exit")
    parser.add_argument("--only", default="", help="only jobs whose name contains this text")
    parser.add_argument("--runs", default=str(ROOT / "runs" / study), help="run folders with checkpoints (untracked)")
    parser.add_argument("--records", default=str(ROOT / "results" / study), help="the tracked records folder")
    args = parser.parse_args()
    runs, records = Path(args.runs).resolve(), Path(args.records).resolve()
    todo = [j for j in jobs if args.only in j.name]
    if args.list:
        for job in todo:
            done = "done" if (records / job.name / "eval.json").is_file() else "todo"
            print(done, job.name, " ".join(job.args))
        return 0
    return run_all(todo, runs, records, args.workers)
