"""RESULTS.md's goal-conditioned sections (issue #31), from the records of experiments/goals.py alone.

Called by make_results.py (which owns RESULTS.md, --check and the figure conventions). Scores: a maze run's
score at an evaluation is its success rate x 100 over 20 episodes from the env's own start and goal
distribution (the maze's reference returns are 0 and 1: an episode's return is 1 when it reaches the goal);
an IQL-goal run's is its D4RL-normalized return over 20 episodes at the value goal's one "target". "last" and
"best" as in the locomotion study; cells mean ± std over seeds; Welch's 95% interval for the differences.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import yaml

import goals
from make_results import MODEL_LABELS, Run, differ_text, kilo, label, load_run, mean_std, plot_series

CELL_LABELS = {"dtd-b1": "DTd-b1 + waypoints", "dtd-b2": "DTd-b2 + waypoints", "dtd-b1-nowp": "DTd-b1, no waypoints",
               "dt": "DT (return-to-go)"}
MAZE_DIFFS = (("dtd-b1", "dt", "DTd-b1 − DT"), ("dtd-b2", "dt", "DTd-b2 − DT"),
              ("dtd-b1", "dtd-b1-nowp", "waypoints − none (DTd-b1)"))


def maze_label(maze: str) -> str:
    robot, _, layout = maze.partition("-")
    return f"{robot.removesuffix('maze').capitalize()}Maze {layout}"


def load(records: Path) -> dict:
    """Every goal record: runs by group, fixed-goal results, datasets, critics, and each record's info."""
    out: dict = {"runs": [], "fixed": {}, "data": {}, "critics": {}, "tokens": {}, "info": {}}
    for path in sorted(records.glob("*/record.json")):
        info, folder = json.loads(path.read_text()), path.parent
        out["info"][info["name"]] = info
        group = info["tags"].get("group")
        if group in ("maze", "maze-rerun", "iql"):
            out["runs"].append(load_run(folder, info))
        elif group == "maze-fixed":
            result = json.loads((folder / "eval.json").read_text())
            out["fixed"][info["name"].removesuffix("-fixed")] = result["targets"]["1"]["normalized_mean"]
        elif group == "data":
            data = json.loads((folder / "dataset.json").read_text())
            returns = re.search(r"^return:\s+mean ([0-9.]+)", (folder / "info.txt").read_text(), re.M)
            data["goals_per_episode"] = float(returns.group(1)) if returns else None  # continuing data: reward 1 a goal
            out["data"][info["tags"]["dataset"]] = data
        elif group == "critic":
            out["critics"][info["tags"]["dataset"]] = folder
        elif group == "tokens":
            out["tokens"][info["tags"]["dataset"]] = json.loads((folder / "tokens.json").read_text())
    return out


def cell(rec: dict, group: str, dataset: str, model: str) -> list[Run]:
    return sorted((r for r in rec["runs"] if (r.group, r.dataset, r.model) == (group, dataset, model)),
                  key=lambda r: r.seed)


def data_table(rec: dict) -> str:
    rows = ["| dataset | episodes | transitions | mean length | how episodes end | collected at |",
            "|---|---:|---:|---:|---|---:|"]
    for maze in goals.MAZES:
        d = rec["data"].get(maze)
        if d is None:
            rows.append(f"| {maze_label(maze)} | — | — | — | — | — |")
            continue
        ends = d["ends"]
        if ends["goal"]:  # AntMaze: an episode ends at its goal, a flip or the time limit
            how = ", ".join(f"{100 * ends[k] / d['episodes']:.0f}% {w}" for k, w in
                            (("goal", "at the goal"), ("flip", "in a flip"), ("time", "at the time limit")))
        else:
            how = "at the time limit; the goal is resampled when reached" + (
                f" ({d['goals_per_episode']:.1f} goals per episode)" if d.get("goals_per_episode") is not None else "")
        speed = f"{d['collect']['steps_per_second']:,.0f} steps/s" if d.get("collect") else "—"
        rows.append(f"| {maze_label(maze)} | {d['episodes']:,} | {d['transitions']:,} | {d['mean_length']:.0f} | "
                    f"{how} | {speed} |")
    return "\n".join(rows)


def maze_table(rec: dict) -> str:
    cells = list(goals.MAZE_MODELS)
    head = ["maze"] + [f"{CELL_LABELS[c]} {k}" for c in cells for k in ("last", "best")]
    head += [f"{t}, last (Welch 95% CI)" for _, _, t in MAZE_DIFFS] + ["DTd-b1 − DT, mean over the curve"]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (2 * len(cells)) + "---|" * (len(MAZE_DIFFS) + 1)]
    for maze in goals.MAZES:
        runs = {c: cell(rec, "maze", maze, c) for c in cells}
        row = [maze_label(maze)]
        for c in cells:
            row += [mean_std([r.last for r in runs[c]]), mean_std([r.best for r in runs[c]])]
        row += [differ_text([r.last for r in runs[a]], [r.last for r in runs[b]]) for a, b, _ in MAZE_DIFFS]
        row.append(differ_text([r.mean_over_curve for r in runs["dtd-b1"]], [r.mean_over_curve for r in runs["dt"]]))
        rows.append("| " + " | ".join(row) + " |")
    return "\n".join(rows)


def fixed_table(rec: dict) -> str:
    cells = list(goals.MAZE_MODELS)
    rows = ["| maze | " + " | ".join(CELL_LABELS[c] for c in cells) + " | DTd-b1 − DT (Welch 95% CI) | "
            "waypoints − none (Welch 95% CI) | checkpoints |", "|---|" + "---:|" * len(cells) + "---|---|---|"]
    for maze in goals.FIXED_MAZES:
        rerun = maze in goals.RERUN_MAZES
        scores = {c: [rec["fixed"][r.name] for r in cell(rec, "maze-rerun" if rerun else "maze", maze, c)
                      if r.name in rec["fixed"]] for c in cells}
        rows.append(f"| {maze_label(maze)} | " + " | ".join(mean_std(scores[c]) for c in cells) +
                    f" | {differ_text(scores['dtd-b1'], scores['dt'])} | "
                    f"{differ_text(scores['dtd-b1'], scores['dtd-b1-nowp'])} | "
                    f"{'the reruns here (below)' if rerun else 'the grid runs'} |")
    return "\n".join(rows)


def rerun_table(rec: dict) -> str:
    """PointMaze's grid runs (GPU box) against the same runs trained again here: how far a run reproduces."""
    rows = ["| maze | model | grid run, last | rerun here, last | rerun − grid (Welch 95% CI) | by seed (grid → rerun) |",
            "|---|---|---:|---:|---|---|"]
    for maze in goals.RERUN_MAZES:
        for c in goals.MAZE_MODELS:
            grid = {r.seed: r.last for r in cell(rec, "maze", maze, c)}
            rerun = {r.seed: r.last for r in cell(rec, "maze-rerun", maze, c)}
            pairs = ", ".join(f"s{k}: {grid[k]:.0f} → {rerun[k]:.0f}" for k in sorted(grid) if k in rerun) or "—"
            rows.append(f"| {maze_label(maze)} | {CELL_LABELS[c]} | {mean_std(list(grid.values()))} | "
                        f"{mean_std(list(rerun.values()))} | {differ_text(list(rerun.values()), list(grid.values()))} | "
                        f"{pairs} |")
    return "\n".join(rows)


def iql_table(rec: dict, study_rec) -> str:
    """The value goal against return-to-go (the locomotion study's own runs) for DTd and DT-small."""
    head = ["dataset"]
    for m in goals.IQL_MODELS:
        head += [f"{MODEL_LABELS[m]} value goal last", f"{MODEL_LABELS[m]} return-to-go last",
                 f"{MODEL_LABELS[m]} value − return-to-go (Welch 95% CI)"]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|---:|---|" * len(goals.IQL_MODELS)]
    for d in goals.IQL_DATASETS:
        row = [label(d)]
        for m in goals.IQL_MODELS:
            iql = [r.last for r in cell(rec, "iql", d, m)]
            rtg = [r.last for r in study_rec.cell("main", d, m)]
            row += [mean_std(iql), mean_std(rtg), differ_text(iql, rtg)]
        rows.append("| " + " | ".join(row) + " |")
    best = ["| best over the curve |"]
    for m in goals.IQL_MODELS:
        vals = [(mean_std([r.best for r in cell(rec, "iql", d, m)]), mean_std([r.best for r in study_rec.cell(
            "main", d, m)])) for d in goals.IQL_DATASETS]
        best.append(" / ".join(v for v, _ in vals) + " | " + " / ".join(v for _, v in vals) + " | |")
    return "\n".join(rows) + "\n" + "".join(best) + " (" + " / ".join(label(d) for d in goals.IQL_DATASETS) + ")"


def critics_table(rec: dict) -> str:
    rows = ["| critic | dataset | steps x batch | discount | expectile | temperature | final losses (Q, V, actor) |",
            "|---|---|---:|---:|---:|---:|---|"]
    for d in goals.IQL_DATASETS:
        folder = rec["critics"].get(d)
        if folder is None:
            rows.append(f"| {goals.critic_name(d)} | {goals.IQL_DATASETS[d]} | — | — | — | — | — |")
            continue
        cfg = yaml.safe_load((folder / "config.yaml").read_text())
        last = [json.loads(t) for t in (folder / "metrics.jsonl").read_text().splitlines() if t.strip()][-1]
        losses = ", ".join(f"{last[k]:.3g}" for k in ("q_loss", "value_loss", "actor_loss") if k in last)
        rows.append(f"| {goals.critic_name(d)} | {cfg['dataset']} | {cfg['steps']:,} x {cfg['batch_size']} | "
                    f"{cfg['discount']} | {cfg['expectile']} | {cfg['temperature']} | {losses} |")
    return "\n".join(rows)


def _r(r: float | None) -> str:
    return "—" if r is None else f"{r:+.2f}"


def tokens_table(rec: dict) -> str:
    rows = ["| dataset | episodes | V over the data (min, max) | token: 10th / 50th / 90th percentile | an episode's first "
            "token: 10th / 50th / 90th | corr(episode's mean token, its return) | corr(first token, return) | "
            "bottom return quartile: return, mean token | top quartile: return, mean token |",
            "|---|---:|---|---|---|---:|---:|---|---|"]
    for d in goals.IQL_DATASETS:
        s = rec["tokens"].get(d)
        if s is None:
            rows.append(f"| {label(d)} | — | — | — | — | — | — | — | — |")
            continue
        tok, first = s["token_percentiles"], s["first_token_percentiles"]
        quart = lambda q: f"{s[q]['return']:,.0f}, {s[q]['mean_token']:.2f}"  # noqa: E731
        rows.append(f"| {label(d)} | {s['episodes']:,} | {s['v_small']:.1f}, {s['v_large']:.1f} | "
                    f"{tok['10']:.2f} / {tok['50']:.2f} / {tok['90']:.2f} | "
                    f"{first['10']:.2f} / {first['50']:.2f} / {first['90']:.2f} | {_r(s['corr_mean_token_return'])} | "
                    f"{_r(s['corr_first_token_return'])} | {quart('bottom_quartile')} | {quart('top_quartile')} |")
    return "\n".join(rows)


def compute_text(rec: dict) -> str:
    rows = ["| runs | records | training samples/s (median) | wall per run (median) | total wall | machines |",
            "|---|---:|---:|---:|---:|---|"]
    for name, runs in (("PointMaze", [r for r in rec["runs"] if r.group == "maze" and r.dataset.startswith("point")]),
                       ("AntMaze", [r for r in rec["runs"] if r.group == "maze" and r.dataset.startswith("ant")]),
                       ("PointMaze, rerun here", [r for r in rec["runs"] if r.group == "maze-rerun"]),
                       ("IQL value goal", [r for r in rec["runs"] if r.group == "iql"])):
        if not runs:
            rows.append(f"| {name} | 0 | — | — | — | — |")
            continue
        machines = sorted({r.machine or "?" for r in runs})
        whole = [r.wall_seconds for r in runs if r.segments == 1]  # a resumed run's wall is its last segment's
        rows.append(f"| {name} | {len(runs)} | {np.median([r.samples_per_s for r in runs]):,.0f} | "
                    f"{f'{np.median(whole) / 60:.0f} min' if whole else '—'} | "
                    f"{sum(r.wall_seconds for r in runs) / 3600:.1f} h | {'; '.join(machines)} |")
    expected = goals.jobs()
    have = [j for j in expected if j.name in rec["info"]]
    stale = [j.name for j in expected if j.step is None and j.name in rec["info"]
             and rec["info"][j.name].get("args") not in (None, list(j.args))]
    text = f"Progress: {len(have)} of {len(expected)} jobs of experiments/goals.py have a record."
    if resumed := sum(r.segments > 1 for r in rec["runs"]):
        text += (f" {resumed} run(s) were resumed after an interruption: their wall time is the last segment's "
                 "(in the total too; the median is over the runs that ran in one go).")
    left = [j.name for j in expected if j.name not in rec["info"]]
    if left:
        text += f" Left: {len(left)} ({', '.join(sorted({_kind(n) for n in left}))})."
    if stale:
        text += f" **{len(stale)} record(s) were made with other arguments than goals.py gives now**: {', '.join(stale)}."
    return "\n".join(rows) + "\n\n" + text


def _kind(name: str) -> str:
    """A job's cell: its name without the seed and the fixed-goal step's suffix (a rerun keeps its own)."""
    return re.sub(r"-s\d+", "", name.removesuffix("-fixed"))


def seeds_table(rec: dict) -> str:
    rows = ["| run | last | best (at samples) | fixed start/goal | commit | wall |", "|---|---:|---:|---:|---|---:|"]
    for r in sorted(rec["runs"], key=lambda r: r.name):
        at = max(r.curve, key=r.curve.get) if r.curve else 0
        fixed = f"{rec['fixed'][r.name]:.0f}" if r.name in rec["fixed"] else "—"
        rows.append(f"| {r.name} | {r.last:.1f} | {r.best:.1f} ({kilo(at)}) | {fixed} | {r.commit[:7]} | "
                    f"{r.wall_seconds / 60:.0f} min{' (resumed)' if r.segments > 1 else ''} |")
    return "\n".join(rows)


def blocks(records: Path, study_rec, figures: Path, base: Path, draw: bool) -> dict[str, str]:
    rec = load(records)
    figs = []
    for maze in goals.MAZES:
        series = {CELL_LABELS[c]: cell(rec, "maze", maze, c) for c in goals.MAZE_MODELS}
        path = figures / f"curve_{maze}.png"
        if any(r.curve for runs in series.values() for r in runs):
            if draw:
                plot_series(series, maze_label(maze), None, path, ylabel="success rate x 100 (env's starts and goals)")
            figs.append(f"![{maze}]({os.path.relpath(path, base)})")
    for d in goals.IQL_DATASETS:
        series = {f"{MODEL_LABELS[m]}, {g}": runs for m in goals.IQL_MODELS for g, runs in
                  (("value goal", cell(rec, "iql", d, m)), ("return-to-go", study_rec.cell("main", d, m)))}
        path = figures / f"curve_iql_{d}.png"
        if any(r.curve for r in series[f"{MODEL_LABELS['dtd']}, value goal"]):
            if draw:
                plot_series(series, f"{label(d)}: value goal vs return-to-go", None, path)
            figs.append(f"![iql {d}]({os.path.relpath(path, base)})")
    return {"goals_data": data_table(rec), "goals_maze": maze_table(rec), "goals_fixed": fixed_table(rec),
            "goals_rerun": rerun_table(rec),
            "goals_maze_curves": "\n".join(figs) or "No curves yet.", "goals_iql": iql_table(rec, study_rec),
            "goals_critics": critics_table(rec), "goals_tokens": tokens_table(rec), "goals_compute": compute_text(rec), "goals_seeds": seeds_table(rec)}
