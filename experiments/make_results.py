"""Every table and figure of RESULTS.md, from the committed records alone (no run folders, no datasets).

    .venv/bin/python experiments/make_results.py            # rewrite RESULTS.md's blocks and the figures
    .venv/bin/python experiments/make_results.py --check    # exit 1 if RESULTS.md is not what the records give

Reads results/study/ (experiments/study.py) and results/diagnosis/ (experiments/diagnose.py, whose tables
make_diagnosis.py builds), replaces every `<!-- BEGIN name -->` ... `<!-- END name -->` block of RESULTS.md,
and draws docs/results/curve_<dataset>.png, attention_study.png and diagnosis.png. The output depends on the
records only (sorted, fixed formats, no dates), so a fresh clone regenerates RESULTS.md byte for byte.

Scores. A seed's score at an evaluation is its mean D4RL-normalized return over 10 episodes at the better of
the spec's two targets. "last" is that score at the final evaluation, "best" the highest over every
evaluation of the run (CORL's two numbers; best is optimistic: a max over 8 noisy evaluations). Cells are
mean ± std over seeds (ddof=0), with n= when fewer than the grid's seeds are in, and — when none is.

Significance. DTd − DT-small on the last score: Welch's t-test (unequal variances) with its 95% confidence
interval of the mean difference (scipy.stats.ttest_ind, equal_var=False). "differ" when the interval excludes
0 (p < 0.05), "no evidence" otherwise. With 3 seeds per side the test has little power: "no evidence" is not
evidence of equality. A bootstrap was not used: with 3 values per side it can only resample 10 distinct means
and its interval is too narrow.

Claims. The paper's three claims side by side (block study_claims), each the same Welch comparison per dataset:
DTd − DT-small on the last score, DTd − DT-large on the last score, DTd − DT-small on the mean over the curve;
the last row counts the datasets where DTd is ahead, behind, not told apart, or not yet testable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.stats
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_diagnosis  # noqa: E402  (the diagnosis section's tables)
import study  # noqa: E402  (the grid: which runs there should be)

ROOT = Path(__file__).resolve().parents[1]
MODEL_LABELS = {"dtd": "DTd", "dt-small": "DT-small", "dt-large": "DT-large", "bc": "BC"}
ABLATION_LABELS = {"bias-b0": "bias b0 (no goal)", "bias-left": "bias left (goal → state stream)",
                   "bias-right": "bias right (goal → action stream)", "default": "bias all, c22 (default)",
                   "combiner-c21": "combiner c21 (linear)", "combiner-c23": "combiner c23 (gate)"}
ARROW = {"r": "goal", "s": "state", "a": "action"}
PAIRS = [q + k for q in "rsa" for k in "rsa"]  # dtd.analysis.attention.SCORE_NAMES: goal, state, action


def kilo(samples: int) -> str:
    return f"{samples // 1000}k" if samples % 1000 == 0 else f"{samples:,}"


# ---- records -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished training run, from its record folder."""

    name: str
    group: str  # main | ablation
    dataset: str
    model: str
    variant: str  # "default" or the ablation's preset suffix
    seed: int
    curve: dict[int, float]  # samples seen -> best-target score
    last: float
    commit: str  # the last commit that changed src/ (presets included) when it started (older records: HEAD)
    wall_seconds: float
    train_seconds: float  # from the logged throughput: training only, every segment of a resumed run
    samples_per_s: float  # median of the logged intervals
    segments: int = 1
    machine: str | None = None  # CPU, cores and torch of its last start (records from 2026-12-01 on)

    @property
    def best(self) -> float:
        return max([self.last, *self.curve.values()])

    @property
    def mean_over_curve(self) -> float:
        """The mean of every evaluation's score: the area under the learning curve over its width."""
        return float(np.mean(list(self.curve.values()))) if self.curve else self.last


@dataclass
class Records:
    runs: list[Run] = field(default_factory=list)
    attention: dict[str, dict] = field(default_factory=dict)  # model -> `dtd attention` summary
    datasets: dict[str, dict] = field(default_factory=dict)  # dataset -> {"mean_normalized", ...}
    steps: dict[str, str] = field(default_factory=dict)  # step record name -> commit
    args: dict[str, list[str]] = field(default_factory=dict)  # record name -> its job's `dtd train` arguments

    def cell(self, group: str, dataset: str, model: str, variant: str = "default") -> list[Run]:
        return sorted((r for r in self.runs if (r.group, r.dataset, r.model, r.variant) ==
                       (group, dataset, model, variant)), key=lambda r: r.seed)


def best_target_score(targets: dict) -> float:
    return max(float(t["normalized_mean"]) for t in targets.values())


def load_run(folder: Path, info: dict) -> Run:
    tags = info["tags"]
    batch = int(yaml.safe_load((folder / "config.yaml").read_text())["batch_size"])
    curve, sps, train_s, prev = {}, [], 0.0, 0
    for text in (folder / "metrics.jsonl").read_text().splitlines():
        row = json.loads(text) if text.strip() else {}
        if "eval" in row:
            curve[int(row["step"]) * batch] = best_target_score(row["eval"])
        elif "samples_per_s" in row:
            sps.append(float(row["samples_per_s"]))
            train_s += (int(row["step"]) - prev) * batch / max(float(row["samples_per_s"]), 1e-9)
            prev = int(row["step"])
    last = best_target_score(json.loads((folder / "eval.json").read_text())["targets"])
    return Run(info["name"], tags["group"], tags["dataset"], tags["model"], tags.get("variant", "default"),
               int(tags["seed"]), curve, last, info.get("code") or info["commit"], float(info["wall_seconds"]), train_s,
               float(np.median(sps)) if sps else float("nan"), len(info.get("segments", [])) or 1,
               info.get("machine"))


def load_records(records: Path) -> Records:
    out = Records()
    for path in sorted(records.glob("*/record.json")):
        info, folder = json.loads(path.read_text()), path.parent
        group = info["tags"].get("group")
        if "args" in info:
            out.args[info["name"]] = info["args"]
        if group in ("main", "ablation"):
            out.runs.append(load_run(folder, info))
        elif group == "attention":
            out.attention = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))
                             if p.name != "record.json"}
            out.steps[info["name"]] = info.get("code") or info["commit"]
        elif group == "datasets":
            out.datasets = json.loads((folder / "means.json").read_text())
            out.steps[info["name"]] = info.get("code") or info["commit"]
    return out


# ---- statistics ----------------------------------------------------------------------------------


def welch(a: list[float], b: list[float], level: float = 0.95) -> dict | None:
    """mean(a) − mean(b), its Welch confidence interval, p and df; None with fewer than 2 values a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = float(np.mean(a) - np.mean(b))
    if np.var(a) == 0.0 and np.var(b) == 0.0:  # no spread on either side: the difference is exact (scipy: nan)
        return {"diff": diff, "lo": diff, "hi": diff, "p": 1.0 if diff == 0 else 0.0, "df": math.inf}
    test = scipy.stats.ttest_ind(a, b, equal_var=False)
    ci = test.confidence_interval(level)
    return {"diff": diff, "lo": float(ci.low), "hi": float(ci.high), "p": float(test.pvalue), "df": float(test.df)}


def pooled_welch(pairs: list[tuple[list[float], list[float]]], level: float = 0.95) -> dict | None:
    """The mean over datasets of mean(a) − mean(b), with a Welch interval: its variance is the sum of every
    side's s²/n over D², its df Welch–Satterthwaite's over all 2D sides (with one dataset: `welch` exactly).
    Pooling the datasets is what a paper's "average" row claims, and it has more power than any one row.
    Datasets with fewer than 2 seeds a side are left out; None when none is left."""
    pairs = [(a, b) for a, b in pairs if len(a) >= 2 and len(b) >= 2]
    if not pairs:
        return None
    n = len(pairs)
    diff = float(np.mean([np.mean(a) - np.mean(b) for a, b in pairs]))
    sides = [np.var(x, ddof=1) / len(x) for ab in pairs for x in ab]  # each side's s²/n
    counts = [len(x) for ab in pairs for x in ab]
    if sum(sides) == 0.0:
        return {"diff": diff, "lo": diff, "hi": diff, "p": 1.0 if diff == 0 else 0.0, "df": math.inf, "datasets": n}
    se = math.sqrt(sum(sides)) / n
    df = sum(sides) ** 2 / sum(v * v / (k - 1) for v, k in zip(sides, counts))
    half = float(scipy.stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * scipy.stats.t.sf(abs(diff) / se, df))
    return {"diff": diff, "lo": diff - half, "hi": diff + half, "p": p, "df": df, "datasets": n}


def _side(w: dict) -> str:
    """'ahead' or 'behind' when the interval excludes 0, else 'no evidence' (the one rule every table uses)."""
    return "ahead" if w["lo"] > 0 else "behind" if w["hi"] < 0 else "no evidence"


def verdict(a: list[float], b: list[float]) -> str:
    """Where a stands against b by Welch's 95% interval; 'untested' with fewer than 2 values a side."""
    w = welch(a, b)
    return "untested" if w is None else _side(w)


def differ_text(a: list[float], b: list[float]) -> str:
    """'+4.1 [−2.0, 10.2], p 0.16: no evidence' (or ': differ'), with n= when a side is short of 3 seeds."""
    w = welch(a, b)
    if w is None:
        return f"— (n={len(a)} vs {len(b)})" if a or b else "—"
    word = "no evidence" if _side(w) == "no evidence" else "differ"
    short = "" if len(a) >= len(study.SEEDS) and len(b) >= len(study.SEEDS) else f" (n={len(a)} vs {len(b)})"
    return f"{w['diff']:+.1f} [{w['lo']:.1f}, {w['hi']:.1f}], p {w['p']:.2f}: {word}{short}"


def mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.1f} (n=1)"
    text = f"{np.mean(values):.1f} ± {np.std(values):.1f}"
    return text if len(values) >= len(study.SEEDS) else f"{text} (n={len(values)})"


# ---- tables --------------------------------------------------------------------------------------


def label(dataset: str) -> str:
    env, _, level = dataset.partition("-")
    return f"{env} {level}"


PAPER_SAMPLES = 6_400_000  # the spec: DTd 25,000 steps x 256; the authors' DT-small script 100,000 x 64


def budget_table() -> str:
    """The study's budget from experiments/study.py itself, beside the paper's (so the two cannot disagree)."""
    r = study.RECIPE
    batch = int(r["batch_size"])
    steps = r["samples"] // batch
    warm = round(steps * r["warmup_fraction"])
    ev = study.EVAL_SAMPLES
    own = [f"{MODEL_LABELS[m]}: " + ", ".join(f"{k} {' '.join(v) if isinstance(v, (list, tuple)) else v}"
                                             for k, v in study.MODEL_RECIPE[m].items())
           for m in study.MODELS if study.MODEL_RECIPE.get(m)]
    departures = f"; each model's own departures: {'; '.join(own)}" if own else ""
    return "\n".join([
        "| | this study | the paper (spec) |", "|---|---|---|",
        f"| samples per run | {steps:,} steps x {batch} = {r['samples']:,}, every model; "
        f"1/{PAPER_SAMPLES / r['samples']:g} of the paper's budget for either | DTd: 10 iterations x 2,500 steps x "
        "256 = 6.4M; DT-small (the authors' DT script): 10 x 10,000 steps x 64 = 6.4M |",
        f"| optimiser | AdamW lr {r['lr']} (`RECIPE` in experiments/study.py: each model's best complete cell of the diagnosis below), wd 1e-4, linear "
        f"warm-up over {warm:,} steps ({r['warmup_fraction']:.0%}), then the spec's 0.5 + 0.5 * 0.9997^(t - warm-up) "
        f"decay{departures} | DTd: lr 1e-4 (1.5e-4 on some hopper runs), 10,000 warm-up steps, same decay; DT-small: the "
        "original DT recipe, linear warm-up and no decay |",
        "| other | clip 0.25, dropout 0.1, K 20, return scale 1000 | same |",
        f"| evaluation | every {ev:,} samples ({ev // batch} steps): 10 episodes at each of the spec's two targets "
        "(hopper 3600 / 1800, halfcheetah 12000 / 6000); a seed's score is its better target's mean | 3 episodes "
        "per target every 2,500 steps |",
        f"| seeds | {', '.join(map(str, study.SEEDS))} | |"])


def main_table(rec: Records) -> str:
    head = ["dataset"] + [f"{MODEL_LABELS[m]} {k}" for m in study.MODELS for k in ("last", "best")]
    head += ["dataset mean", "DTd − DT-small, last (Welch 95% CI)"]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 2) + "---|"]
    for d in study.DATASETS:
        cells = [label(d)]
        for m in study.MODELS:
            runs = rec.cell("main", d, m)
            cells += [mean_std([r.last for r in runs]), mean_std([r.best for r in runs])]
        mean = rec.datasets.get(d, {}).get("mean_normalized")
        cells.append("—" if mean is None else f"{mean:.1f}")
        cells.append(differ_text([r.last for r in rec.cell("main", d, "dtd")],
                                 [r.last for r in rec.cell("main", d, "dt-small")]))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def efficiency_table(rec: Records) -> str:
    """Per dataset and model, the mean score over a run's evaluations (higher: learns sooner, or better)."""
    head = ["dataset"] + [MODEL_LABELS[m] for m in study.MODELS] + ["DTd − DT-small (Welch 95% CI)"]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(study.MODELS) + "---|"]
    for d in study.DATASETS:
        scores = {m: [r.mean_over_curve for r in rec.cell("main", d, m)] for m in study.MODELS}
        rows.append(f"| {label(d)} | " + " | ".join(mean_std(v) for v in scores.values()) + " | "
                    f"{differ_text(scores['dtd'], scores['dt-small'])} |")
    return "\n".join(rows)


# The paper's three claims, each as one Welch comparison per dataset: (claim, other model, score of a run).
CLAIMS = (("DTd beats DT", "dt-small", "last"),
          ("DTd beats a DT of its size", "dt-large", "last"),
          ("DTd learns sooner", "dt-small", "mean_over_curve"))
SCORE_LABELS = {"last": "last", "mean_over_curve": "mean over the curve"}


def claims_table(rec: Records) -> str:
    """One column per claim, one row per dataset (DTd minus the other model), and a tally of the datasets."""
    head = ["dataset"] + [f"{c}: DTd − {MODEL_LABELS[m]}, {SCORE_LABELS[s]}" for c, m, s in CLAIMS]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---|" * len(CLAIMS)]
    tallies: list[dict[str, int]] = [{} for _ in CLAIMS]
    for d in study.DATASETS:
        dtd = rec.cell("main", d, "dtd")
        cells = [label(d)]
        for tally, (_, other, score) in zip(tallies, CLAIMS):
            a = [getattr(r, score) for r in dtd]
            b = [getattr(r, score) for r in rec.cell("main", d, other)]
            cells.append(differ_text(a, b))
            v = verdict(a, b)
            tally[v] = tally.get(v, 0) + 1
        rows.append("| " + " | ".join(cells) + " |")
    order = ("ahead", "behind", "no evidence", "untested")
    rows.append("| **datasets** | " + " | ".join(
        ", ".join(f"{v} {t.get(v, 0)}" for v in order) for t in tallies) + " |")
    pooled = []
    for _, other, score in CLAIMS:
        w = pooled_welch([([getattr(r, score) for r in rec.cell("main", d, "dtd")],
                           [getattr(r, score) for r in rec.cell("main", d, other)]) for d in study.DATASETS])
        pooled.append("—" if w is None else f"{w['diff']:+.1f} [{w['lo']:.1f}, {w['hi']:.1f}], p {w['p']:.2f}: "
                      f"{_side(w)} ({w['datasets']} dataset"
                      f"{'s' if w['datasets'] > 1 else ''})")
    rows.append("| **mean over datasets** | " + " | ".join(pooled) + " |")
    return "\n".join(rows)


def curve_table(rec: Records, dataset: str) -> str:
    """Score against samples seen, mean ± std over the seeds that evaluated there, one column per model."""
    cols = {m: rec.cell("main", dataset, m) for m in study.MODELS}
    samples = sorted({s for runs in cols.values() for r in runs for s in r.curve})
    rows = ["| samples seen | " + " | ".join(MODEL_LABELS[m] for m in cols) + " |", "|---:|" + "---:|" * len(cols)]
    for s in samples:
        cells = [mean_std([r.curve[s] for r in runs if s in r.curve]) for runs in cols.values()]
        rows.append(f"| {kilo(s)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def curves_block(rec: Records, figures: dict[str, Path], base: Path) -> str:
    """Per dataset: its figure (linked relative to RESULTS.md's folder) and the numbers behind it."""
    parts = []
    for d in study.DATASETS:
        if d not in figures:
            parts.append(f"**{label(d)}**: no runs yet.")
            continue
        rel = os.path.relpath(figures[d], base)
        parts.append(f"**{label(d)}**\n\n![{label(d)}]({rel})\n\n<details><summary>numbers</summary>\n\n"
                     f"{curve_table(rec, d)}\n\n</details>")
    return "\n\n".join(parts)


def ablation_runs(rec: Records) -> dict[str, list[Run]]:
    """Variant -> its runs on the ablation's dataset, in ABLATION_LABELS' order; the default is the main grid's DTd."""
    d = study.ABLATION_DATASET
    return {v: rec.cell("main", d, "dtd") if v == "default" else rec.cell("ablation", d, "dtd", v)
            for v in ABLATION_LABELS}


def ablation_table(rec: Records) -> str:
    d = study.ABLATION_DATASET
    variants = ablation_runs(rec)
    default = [r.last for r in variants["default"]]
    rows = [f"| DTd variant ({label(d)}) | last | best | − default, last (Welch 95% CI) |", "|---|---:|---:|---|"]
    for variant, runs in variants.items():
        last = [r.last for r in runs]
        versus = "" if variant == "default" else differ_text(last, default)
        rows.append(f"| {ABLATION_LABELS[variant]} | {mean_std(last)} | {mean_std([r.best for r in runs])} | "
                    f"{versus} |")
    return "\n".join(rows)


def attention_table(rec: Records) -> str:
    if not rec.attention:
        return "(not measured yet: the study's attention step runs once the seed-0 hopper-medium DTd and DT-small " \
               "runs are in)"
    models = [m for m in study.ATTENTION["models"] if m in rec.attention]
    rows = ["| query → key | " + " | ".join(MODEL_LABELS[m] for m in models) + " |", "|---|" + "---:|" * len(models)]
    for k in PAIRS:
        cells = [f"{s['share'][k]:.1%}" if k[0] in s["tokens"] and k[1] in s["tokens"] else "n/a"
                 for s in (rec.attention[m] for m in models)]
        rows.append(f"| {ARROW[k[0]]} → {ARROW[k[1]]} | " + " | ".join(cells) + " |")
    notes = []
    for m in models:
        s = rec.attention[m]
        where = "its join network's last layer" if s.get("network") == "join" else f"its {s['layer']} layer"
        ent = "; ".join(f"bias.{k} cross-attention entropy {v['normalized']:.2f} of uniform"
                        for k, v in sorted(s.get("bias_entropy", {}).items()))
        notes.append(f"{MODEL_LABELS[m]}: {where}, {s['windows']} windows of {s['source']}" + (f"; {ent}" if ent else ""))
    return "\n".join(rows) + "\n\n" + ".\n".join(notes) + "."


def compute_table(rec: Records) -> str:
    groups = {MODEL_LABELS[m]: [r for r in rec.runs if r.group == "main" and r.model == m] for m in study.MODELS}
    groups["DTd ablations"] = [r for r in rec.runs if r.group == "ablation"]
    rows = ["| runs of | records | training samples/s (median) | training per run | wall per run | total wall |",
            "|---|---:|---:|---:|---:|---:|"]
    per_run: dict[str, float] = {}  # mean wall seconds of the runs that ran in one go, by row
    for name, runs in groups.items():
        if not runs:
            rows.append(f"| {name} | 0 | — | — | — | — |")
            continue
        whole = [r.wall_seconds for r in runs if r.segments == 1]  # a resumed run's wall is its last segment's
        if whole:
            per_run[name] = float(np.mean(whole))
        wall = f"{per_run[name] / 60:.0f} min" if whole else "—"
        rows.append(f"| {name} | {len(runs)} | {np.median([r.samples_per_s for r in runs]):.0f} | "
                    f"{np.mean([r.train_seconds for r in runs]) / 60:.0f} min | {wall} | "
                    f"{sum(r.wall_seconds for r in runs) / 3600:.1f} h |")
    expected = study.jobs()
    names = {r.name for r in rec.runs} | set(rec.steps)
    have = sum(j.name in names for j in expected)
    commits: dict[str, int] = {}
    for c in [r.commit for r in rec.runs] + list(rec.steps.values()):
        key = c[:7] + ("+dirty" if c.endswith("+dirty") else "")
        commits[key] = commits.get(key, 0) + 1
    resumed = sum(r.segments > 1 for r in rec.runs)
    stale = [j.name for j in expected if j.name in rec.args and rec.args[j.name] != list(j.args)]
    lines = [f"Progress: {have} of {len(expected)} jobs of experiments/study.py have a record."
             + (f" {resumed} run(s) were resumed after an interruption (wall time: last segment only)." if resumed else ""),
             "Code (the last commit changing src/ (presets included) when each job started; records): " + (", ".join(f"{c} ({n})" for c, n in sorted(commits.items())) or "—") + "."]
    machines: dict[str, list[Run]] = {}
    for r in rec.runs:
        if r.machine:
            machines.setdefault(r.machine, []).append(r)
    if machines:
        lines.append("Machines (named by the records written since 2026-12-01; median training samples/s by model): "
                     + "; ".join(f"{m}: {len(rs)} record(s), " + ", ".join(
                         f"{MODEL_LABELS[k]} {np.median([r.samples_per_s for r in rs if r.model == k]):.0f}"
                         for k in study.MODELS if any(r.model == k for r in rs)) for m, rs in sorted(machines.items()))
                     + ".")
    lines.append(left_text([j for j in expected if j.name not in names], per_run))
    if stale:
        lines.append(f"**{len(stale)} record(s) were made with other arguments than experiments/study.py gives "
                     f"now** (they are in the tables): {', '.join(stale)}.")
    return "\n".join(rows) + "\n\n" + "\n".join(lines)


def left_text(todo: list[study.Job], per_run: dict[str, float], workers: int = 2) -> str:
    """What the jobs without a record will cost, from the wall per run measured so far (an estimate: the
    mean of each model's whole runs; an ablation run costs what DTd's do until ablation runs are in)."""
    if not todo:
        return "Left: nothing; the grid is in."
    hours, unknown = 0.0, []
    for job in todo:
        if job.step is not None:
            continue  # steps take seconds
        if job.tags["group"] == "ablation":
            seconds = per_run.get("DTd ablations", per_run.get("DTd"))
        else:
            seconds = per_run.get(MODEL_LABELS[job.tags["model"]])
        if seconds is None:
            unknown.append(job.name)
        else:
            hours += seconds / 3600
    text = (f"Left: {len(todo)} jobs, about {hours:.0f} worker-hours at the wall per run above "
            f"(about {hours / workers:.0f} h of wall time with {workers} workers; an estimate, not a measurement)")
    return text + (f", not counting {len(unknown)} run(s) of models with no whole run yet." if unknown else ".")


def seeds_table(rec: Records) -> str:
    rows = ["| run | last | best (at samples) | evaluations | commit | wall |", "|---|---:|---:|---:|---|---:|"]
    for r in sorted(rec.runs, key=lambda r: r.name):
        at = max(r.curve, key=r.curve.get) if r.curve else 0
        rows.append(f"| {r.name} | {r.last:.1f} | {r.best:.1f} ({kilo(at)}) | {len(r.curve)} | {r.commit[:7]} | "
                    f"{r.wall_seconds / 60:.0f} min{' (resumed)' if r.segments > 1 else ''} |")
    return "\n".join(rows)


# ---- figures -------------------------------------------------------------------------------------


def _save(fig, path: Path) -> None:
    """PNG without the matplotlib version in its metadata (same bytes on every run of the same build)."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    plt.close(fig)
    os.replace(tmp, path)


def plot_curve(rec: Records, dataset: str, path: Path) -> bool:
    """Score against samples seen for every model on one dataset."""
    series = {MODEL_LABELS[m]: rec.cell("main", dataset, m) for m in study.MODELS}
    return plot_series(series, label(dataset), rec.datasets.get(dataset, {}).get("mean_normalized"), path)


def plot_ablation(rec: Records, path: Path) -> bool:
    """Score against samples seen for every DTd variant of the ablation."""
    series = {ABLATION_LABELS[v]: runs for v, runs in ablation_runs(rec).items()}
    d = study.ABLATION_DATASET
    return plot_series(series, f"DTd ablation, {label(d)}", rec.datasets.get(d, {}).get("mean_normalized"), path)


def plot_series(series: dict[str, list[Run]], title: str, mean: float | None, path: Path,
                ylabel: str = "D4RL normalized score (best target)") -> bool:
    """One line per series (mean over its seeds, ±std band, seeds as dots); False, and no file, if none has a curve."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = False
    for i, (name, cell) in enumerate(series.items()):
        runs = [r for r in cell if r.curve]
        if not runs:
            continue
        xs = sorted({s for r in runs for s in r.curve})
        vals = [[r.curve[s] for r in runs if s in r.curve] for s in xs]
        centre, spread = np.array([np.mean(v) for v in vals]), np.array([np.std(v) for v in vals])
        k = np.array(xs) / 1000
        ax.plot(k, centre, marker="o", ms=3, color=f"C{i}", label=f"{name} (n={len(runs)})")
        ax.fill_between(k, centre - spread, centre + spread, color=f"C{i}", alpha=0.15, lw=0)
        for r in runs:
            ax.plot(np.array(sorted(r.curve)) / 1000, [r.curve[s] for s in sorted(r.curve)], ".", color=f"C{i}",
                    ms=2, alpha=0.6)
        drawn = True
    if mean is not None:
        ax.axhline(mean, color="gray", ls="--", lw=1, label="dataset mean")
    ax.set_xlabel("training samples seen (thousands)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nmean ± std over seeds, dots = seeds", fontsize=10)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
        _save(fig, path)
    else:
        plt.close(fig)
    return drawn


def plot_attention(rec: Records, path: Path) -> None:
    from dtd.analysis import attention as att

    models = [m for m in study.ATTENTION["models"] if m in rec.attention]
    titles = [f"{MODEL_LABELS[m]}, {rec.attention[m]['source']}\n"
              f"{'join network' if rec.attention[m].get('network') == 'join' else 'last layer'}" for m in models]
    att.plot_heatmaps([rec.attention[m] for m in models], path, titles=titles)


# ---- RESULTS.md ----------------------------------------------------------------------------------


def build(records: Path, diagnosis: Path, figures: Path, base: Path, draw: bool = True,
          goal_records: Path | None = None) -> dict[str, str]:
    """Every block of RESULTS.md, name -> text (figures linked relative to `base`); with `draw`, the figures."""
    rec = load_records(records)
    if draw:
        import matplotlib

        matplotlib.use("Agg")
    curve_figs = {d: figures / f"curve_{d}.png" for d in study.DATASETS if any(
        r.curve for m in study.MODELS for r in rec.cell("main", d, m))}
    has_ablation = any(r.curve for v, runs in ablation_runs(rec).items() if v != "default" for r in runs)
    if draw:
        for d, path in curve_figs.items():
            plot_curve(rec, d, path)
        if has_ablation:
            plot_ablation(rec, figures / "curve_ablation.png")
        if rec.attention:
            plot_attention(rec, figures / "attention_study.png")
    ablation = ablation_table(rec)
    if has_ablation:
        ablation += f"\n\n![ablation]({os.path.relpath(figures / 'curve_ablation.png', base)})"
    attention = attention_table(rec)
    if rec.attention:
        attention += f"\n\n![attention]({os.path.relpath(figures / 'attention_study.png', base)})"
    blocks = {"study_budget": budget_table(), "study_main": main_table(rec), "study_curves": curves_block(rec, curve_figs, base),
              "study_efficiency": efficiency_table(rec), "study_claims": claims_table(rec),
              "study_ablation": ablation, "study_attention": attention,
              "study_compute": compute_table(rec), "study_seeds": seeds_table(rec)}
    diag = make_diagnosis.load(diagnosis) if diagnosis.is_dir() else {}
    blocks.update(make_diagnosis.tables(diag, diagnosis))
    if draw and diag:
        make_diagnosis.plot(diag, figures / "diagnosis.png")
    if goal_records is not None and goal_records.is_dir():
        import make_goals  # the goal-conditioned sections (experiments/goals.py's records)

        blocks.update(make_goals.blocks(goal_records, rec, figures, base, draw))
    return blocks


def fill(text: str, blocks: dict[str, str]) -> str:
    """Replace each block's body; a block name missing from the text is an error (a renamed section)."""
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"make_results: RESULTS.md has no block {name}")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default=str(ROOT / "results" / "study"), help="the study's records")
    parser.add_argument("--diagnosis", default=str(ROOT / "results" / "diagnosis"), help="the diagnosis records")
    parser.add_argument("--goals", default=str(ROOT / "results" / "goals"), help="experiments/goals.py's records")
    parser.add_argument("--results", default=str(ROOT / "RESULTS.md"), help="the markdown file whose blocks are filled")
    parser.add_argument("--figures", default=str(ROOT / "docs" / "results"), help="where the figures go")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if RESULTS.md would change")
    args = parser.parse_args(argv)
    results = Path(args.results)
    old = results.read_text()
    blocks = build(Path(args.records), Path(args.diagnosis), Path(args.figures).resolve(), results.resolve().parent,
                   draw=not args.check, goal_records=Path(args.goals))
    new = fill(old, blocks)
    if args.check:
        print("RESULTS.md is up to date" if new == old else "RESULTS.md differs from what the records give")
        return 0 if new == old else 1
    tmp = results.with_name(f".{results.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, results)
    print(f"wrote {results} and the figures in {args.figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
