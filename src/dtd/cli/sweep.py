"""`dtd sweep SPEC.yaml`: run a grid of `dtd train` jobs (idempotent, resumable), list it, or tabulate it."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="run a grid of training runs from a YAML spec (local workers or Ray), resumably",
        description="Run every job of SPEC (configs x overrides x seeds, plus named steps) that has no record yet: "
                    "a job with a checkpoint resumes, a finished one is skipped, so the same command continues an "
                    "interrupted sweep. The spec's format: dtd/sweep/spec.py or README.md, 'Sweeps'.")
    p.add_argument("spec", metavar="SPEC.yaml", help="the sweep spec")
    p.add_argument("--workers", type=int, default=2, help="runs at a time on this machine, one thread each (default 2)")
    p.add_argument("--list", action="store_true", help="print every job's state (done, stale, todo) and exit")
    p.add_argument("--table", action="store_true", help="print last and best per cell (mean ± std over seeds) and exit")
    p.add_argument("--only", default="", metavar="TEXT", help="only jobs whose name contains TEXT")
    p.add_argument("--ray", metavar="ADDRESS", help="run each job as a Ray task: 'auto' (the cluster this node is "
                   "in), 'local' (start one here) or an address such as ray://head:10001")
    p.add_argument("--commit-records", action="store_true", help="git-commit each new record folder when it is written")
    p.add_argument("--wandb", metavar="PROJECT", help="log every run to this Weights & Biases project (one group)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal

    from dtd.errors import DtdError
    from dtd.sweep import list_lines, load_spec, run_sweep, table

    if args.workers < 1:
        raise DtdError(f"--workers expects at least 1, got {args.workers}")
    sweep = load_spec(args.spec)
    if args.wandb:
        sweep.wandb = {"project": args.wandb, "group": sweep.name}
    jobs = [j for j in sweep.jobs if args.only in j.name]
    if args.list:
        print("\n".join(list_lines(jobs, sweep.where.records)))
        return 0
    if args.table:
        print(table(jobs, sweep.where.records))
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill PID` stops the runs too; checkpoints stay
    return run_sweep(sweep, args.workers, args.ray, args.commit_records, args.only)
