"""What a sweep has: every job's state (`--list`) and, per cell, last and best over seeds (`--table`).

A run's score at an evaluation is its best target's normalized mean (the return where the dataset has no
reference scores); "last" is the final evaluation's, "best" the highest over the run's evaluations (CORL's
two numbers; best is optimistic)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from dtd.sweep.record import RECORD, Job, state


def list_lines(jobs: list[Job], records: Path) -> list[str]:
    """One line per job, in run order: done / stale / todo, its name and its arguments (or step)."""
    lines = []
    for job in jobs:
        after = f", after {' and '.join(job.needs)}" if job.needs else ""
        what = f"(step{after})" if job.step is not None else " ".join(job.args)
        lines.append(f"{state(job, records)} {job.name} {what}")
    return lines


def _score(targets: dict) -> float:
    values = [t.get("normalized_mean", t.get("return_mean")) for t in targets.values()]
    values = [float(v) for v in values if v is not None]
    return max(values) if values else math.nan


def scores(folder: Path) -> tuple[float, float]:
    """(last, best) of one record folder."""
    last = _score(json.loads((folder / "eval.json").read_text()).get("targets", {}))
    best = last
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval" in row:
            best = max(best, _score(row["eval"]))
    return last, best


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return f"{mean:.1f} ± {std:.1f} (n={len(values)})"


def table(jobs: list[Job], records: Path) -> str:
    """A markdown table: per cell (config x overrides), last and best, mean ± std over the seeds with a record."""
    cells: dict[tuple[str, str], list[tuple[float, float]]] = {}
    stale = 0
    for job in jobs:
        if job.step is not None:
            continue
        key = (job.tags.get("config", job.name), job.tags.get("cell", "default"))
        cells.setdefault(key, [])
        folder = records / job.name
        if (folder / RECORD).is_file() and (folder / "eval.json").is_file():
            cells[key].append(scores(folder))
            stale += state(job, records) == "stale"
    rows = ["| config | overrides | last | best |", "|---|---|---:|---:|"]
    for (config, cell), runs in cells.items():
        rows.append(f"| {config} | {cell} | {mean_std([r[0] for r in runs])} | {mean_std([r[1] for r in runs])} |")
    if stale:
        rows.append(f"\n{stale} record(s) were made with other arguments than the spec gives now (`--list` names them).")
    return "\n".join(rows)
