"""Jobs and their records: what is done, what is stale, how a job starts or resumes, and the record it leaves.

A train job's run folder (with checkpoints) lives under `runs` (large, untracked); when it finishes, its record
-- config.yaml, metrics.jsonl, eval.json and record.json (the commit the code ran at, machine, wall time,
command) -- is copied to `<records>/<job>/`, a small folder meant for git. A job with a record is done."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dtd.paths import temp_name, write_text_atomic
from dtd.sweep.provenance import version

RECORD_FILES = ("config.yaml", "metrics.jsonl", "eval.json")
RECORD = "record.json"  # written last, inside a folder that is renamed into place: its presence = done


@dataclass
class Job:
    name: str  # unique within a sweep: the run folder's and the record's name
    args: tuple[str, ...]  # `dtd train` arguments (everything but the output location)
    tags: dict[str, str] = field(default_factory=dict)  # what the tables group by (model, dataset, ...)
    # A Python step instead of `dtd train`: step(runs, out) writes its files into `out` and returns the
    # equivalent command lines (for the record). It runs once every job in `needs` has a record.
    step: Callable[[Path, Path], list[str]] | None = None
    needs: tuple[str, ...] = ()
    resources: dict[str, float] = field(default_factory=dict)  # Ray: num_cpus (default 1), num_gpus


def done(job: Job | str, records: Path) -> bool:
    return (records / (job if isinstance(job, str) else job.name) / RECORD).is_file()


def stale(job: Job, records: Path) -> bool:
    """A record made with other `dtd train` arguments than the job's now (say, after a recipe changed): it
    still counts as done -- removing it is a human decision -- but listings and tables say so."""
    if not done(job, records):
        return False
    args = json.loads((records / job.name / RECORD).read_text()).get("args")
    return args is not None and args != list(job.args)


def state(job: Job, records: Path) -> str:
    return "stale" if stale(job, records) else "done" if done(job, records) else "todo"


def command(job: Job, runs: Path) -> list[str]:
    """`dtd train` for the job: `--resume` where its run folder holds a checkpoint, else a fresh start."""
    run_dir = runs / job.name
    dtd = [sys.executable, "-m", "dtd", "train"]
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return [*dtd, "--resume", str(run_dir), "--no-progress"]
    return [*dtd, *job.args, "--out_dir", str(runs), "--run_name", job.name, "--force", "--no-progress"]


def log_start(runs: Path, job: Job, resume: bool, at: dict[str, str]) -> list[dict]:
    """Log this start of a job (its commit; a fresh start forgets earlier ones); every start so far."""
    path = runs / "logs" / f"{job.name}.segments.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = path.read_text().splitlines() if resume and path.is_file() else []
    lines.append(json.dumps({**at, "resume": resume}))
    write_text_atomic(path, "\n".join(lines) + "\n")
    return [json.loads(line) for line in lines]


def save_record(job: Job, run_dir: Path | None, records: Path, started: float, cmd: list[str],
                segments: list[dict] | None = None, write: Callable[[Path], list[str]] | None = None,
                root: Path | None = None) -> Path:
    """Copy the run's small files (or let `write` make them) into records/<name>/, written under a temporary
    name then renamed, so a record is complete or absent. `commit` is the commit the job started at (`code`:
    the last commit that changed src/ then; `machine`: where the last start ran); `segments` lists every start
    (one per resume) when there was more than one; wall time runs from `started` (the last start) to now."""
    final = records / job.name
    tmp = temp_name(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if write is not None:
            cmd = write(tmp)
        else:
            for name in RECORD_FILES:
                shutil.copyfile(run_dir / name, tmp / name)
        segments = segments or [{**version(root or Path.cwd()), "resume": False}]
        (tmp / RECORD).write_text(json.dumps(record_info(job, started, cmd, segments), indent=1) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def record_info(job: Job, started: float, cmd: list[str], segments: list[dict]) -> dict[str, Any]:
    """record.json's fields, in their order (tables and older records read the same keys)."""
    info = {"name": job.name, "tags": job.tags, "commit": segments[0]["commit"], "code": segments[0].get("code"),
            "machine": segments[-1].get("machine"), "wall_seconds": round(time.time() - started, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": cmd, "args": list(job.args)}
    if len(segments) > 1:
        info["segments"] = segments  # wall_seconds covers the last one only
    return info
