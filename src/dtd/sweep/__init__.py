"""Grids of `dtd train` runs (`dtd sweep SPEC.yaml`): idempotent jobs with small records, resumed from their
checkpoints, run by local worker processes or as Ray tasks on a cluster.

    sweep = load_spec("grid.yaml")
    run_sweep(sweep, workers=2)          # or ray="auto"
    print(table(sweep.jobs, sweep.where.records))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from dtd.sweep.local import Where, commit_record, run_job
from dtd.sweep.pool import run_all
from dtd.sweep.record import RECORD, RECORD_FILES, Job, command, done, save_record, stale, state
from dtd.sweep.spec import Sweep, load_spec
from dtd.sweep.table import list_lines, table

__all__ = ["Job", "Where", "Sweep", "load_spec", "run_sweep", "run_all", "run_job", "list_lines", "table", "done",
           "stale", "state", "command", "save_record", "commit_record", "RECORD", "RECORD_FILES", "WandbCommand"]


@dataclass
class WandbCommand:
    """`dtd train` for a job, logging to Weights & Biases in the sweep's group (a resume continues its run)."""
    project: str
    group: str

    def __call__(self, job: Job, runs: Path) -> list[str]:
        return [*command(job, runs), "--wandb", self.project, "--wandb_group", self.group]


def run_sweep(sweep: Sweep, workers: int = 2, ray: str | None = None, commit_records: bool = False,
              only: str = "") -> int:
    """Run the sweep's jobs without a record: `workers` local processes, or Ray tasks when `ray` is an address
    ("auto", "local", "ray://host:10001"); 0 when all finished, 1 if any failed, 130 when interrupted."""
    where = dataclasses.replace(sweep.where, commit_records=commit_records)
    if sweep.wandb:
        where.command = WandbCommand(sweep.wandb["project"], sweep.wandb["group"])
    jobs = [j for j in sweep.jobs if only in j.name]
    if ray:
        from dtd.sweep.ray_backend import run_ray

        return run_ray(jobs, where, ray)
    return run_all(jobs, where, workers)
