"""The experiment scripts' command line over the package's sweep engine (dtd.sweep: `dtd sweep` is the same
engine with a YAML spec): run `dtd train` jobs a few at a time, resumably, and keep each finished run's small
record in git.

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

import sys
from collections.abc import Callable
from pathlib import Path

from dtd.sweep import provenance
from dtd.sweep.local import Where, commit_record
from dtd.sweep.local import run_job as _run_job
from dtd.sweep.pool import run_all as _run_all
from dtd.sweep.record import RECORD, RECORD_FILES, Job, done, save_record, stale, state  # noqa: F401  (the API)
from dtd.sweep.record import command as _command
from dtd.sweep.table import list_lines

ROOT = Path(__file__).resolve().parents[1]
FROM_ENV = provenance.FROM_ENV

__all__ = ["ROOT", "Job", "done", "stale", "command", "save_record", "commit_record", "run_job", "run_all", "main",
           "commit", "code_commit", "machine", "version"]


def commit() -> str:
    return provenance.commit(ROOT)


def code_commit() -> str:
    return provenance.code_commit(ROOT)


def machine() -> str:
    return provenance.machine()


def version() -> dict[str, str]:
    return provenance.version(ROOT)


def command(job: Job, runs: Path) -> list[str]:
    return _command(job, runs)


def _where(runs: Path, records: Path, git_commit: bool) -> Where:
    # `command` looked up on each call, so that a test (or a wrapper script) may replace runner.command
    return Where(runs, records, root=ROOT, commit_records=git_commit, command=lambda job, r: command(job, r))


def run_job(job: Job, runs: Path, records: Path, index: int, total: int, git_commit: bool = False) -> int:
    return _run_job(job, _where(runs, records, git_commit), index, total)


def run_all(jobs: list[Job], runs: Path, records: Path, workers: int, git_commit: bool = False) -> int:
    """Run every job without a record, `workers` at a time (one torch thread each), each worker taking the
    first job in list order whose `needs` are done; 1 if any failed or could not run."""
    import os

    if not os.environ.get("MINARI_DATASETS_PATH"):
        print("set MINARI_DATASETS_PATH to the folder holding zoo/hopper/... (../shared/datasets)", file=sys.stderr)
        return 2
    return _run_all(jobs, _where(runs, records, git_commit), workers)


def main(description: str, jobs: list[Job], study: str, argv: list[str] | None = None,
         prepare: Callable[[list[Job], Path], int] | None = None) -> int:
    """The command line every study script shares: --workers, --list, --only, --runs, --records, --commit-records.
    `prepare(todo, records)` runs before the jobs (say, to rebuild untracked data they need); non-zero stops."""
    import argparse
    import signal

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
        print("\n".join(list_lines(todo, records)))
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill PID` stops the children too
    if prepare is not None and (rc := prepare(todo, records)):
        return rc
    return run_all(todo, runs, records, args.workers, args.commit_records)
