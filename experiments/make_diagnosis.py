"""RESULTS.md "Diagnosis": tables and a figure built from the committed records of experiments/diagnose.py.

    .venv/bin/python experiments/make_diagnosis.py            # from results/diagnosis/ alone
    MINARI_DATASETS_PATH=../shared/datasets .venv/bin/python experiments/make_diagnosis.py --saturation

A seed's score at a checkpoint is its mean D4RL-normalized return over 10 episodes at the better of the
spec's two targets (the issue's convention); cells are mean ± std over seeds (ddof=0), with every seed's
value at every checkpoint beside them so that unstable recipes show. The probe table gives the relative
loss increase when a_<t (or the goal) is shuffled across the batch. `--saturation` (needs the datasets)
first measures, on 4,096 real windows, the share of pre-tanh head outputs with |x| > 2 at initialisation
and stores it as results/diagnosis/init_saturation.json; `--dataset-actions` (needs the datasets)
stores halfcheetah medium-replay's action magnitudes in results/diagnosis/dataset_actions.json. Blocks
`<!-- BEGIN diagnosis_* -->` in RESULTS.md are replaced; the figure goes to docs/results/diagnosis.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "results" / "diagnosis"
DATASETS = {"halfcheetah-medium-replay": "halfcheetah medium-replay", "hopper-medium-replay": "hopper medium-replay"}
LRS = ("1e-3", "3e-4", "1e-4")  # the grid's learning rates
CELLS = {  # cell -> what differs from the model's centre (lr 3e-4, batch 64, faithful DTd c22 / bias all)
    "dtd-lr3e-4": "DTd, centre", "dtd-lr1e-3": "DTd, lr 1e-3", "dtd-lr1e-4": "DTd, lr 1e-4",
    "dtd-legacy": "DTd, dtd 0.1 default", "dtd-b256": "DTd, batch 256 x 250 steps", "dtd-c23": "DTd, combiner c23",
    "dtd-head0.1": "DTd, head init x0.1", "dtd-bias-right": "DTd, bias right",
    "dtd-lr1e-3-head0.1": "DTd, lr 1e-3 + head init x0.1",
    "dt-small-lr3e-4": "DT-small, centre", "dt-small-lr1e-3": "DT-small, lr 1e-3", "dt-small-lr1e-4": "DT-small, lr 1e-4",
    "dt-small-b256": "DT-small, batch 256 x 250 steps",
    "bc-lr3e-4": "BC, centre", "bc-lr1e-3": "BC, lr 1e-3", "bc-lr1e-4": "BC, lr 1e-4",
    **{f"d3rlpy-dt-lr{lr}": f"d3rlpy's DT, lr {lr}" for lr in LRS},
}
REFERENCE = "reference-d3rlpy"  # experiments/reference_dt.py's records: an established library's DT on this grid
# The recipe's factors, one at a time from each model's centre (and one pair together): model -> factor -> option -> cell
FACTORS = {
    "dtd": {"lr": {"3e-4": "dtd-lr3e-4", "1e-3": "dtd-lr1e-3", "1e-4": "dtd-lr1e-4"},
            "batch": {"64": "dtd-lr3e-4", "256": "dtd-b256"}, "head init": {"1x": "dtd-lr3e-4", "0.1x": "dtd-head0.1"},
            "head init at lr 1e-3": {"1x": "dtd-lr1e-3", "0.1x": "dtd-lr1e-3-head0.1"},
            "model": {"faithful": "dtd-lr3e-4", "dtd 0.1": "dtd-legacy"},
            "combiner": {"c22": "dtd-lr3e-4", "c23": "dtd-c23"}, "bias": {"all": "dtd-lr3e-4", "right": "dtd-bias-right"}},
    "dt-small": {"lr": {"3e-4": "dt-small-lr3e-4", "1e-3": "dt-small-lr1e-3", "1e-4": "dt-small-lr1e-4"},
                 "batch": {"64": "dt-small-lr3e-4", "256": "dt-small-b256"}},
    "bc": {"lr": {"3e-4": "bc-lr3e-4", "1e-3": "bc-lr1e-3", "1e-4": "bc-lr1e-4"}},
}
MODEL_LABELS = {"dtd": "DTd", "dt-small": "DT-small", "bc": "BC"}
# Cells that change the model, not how it is trained: measured to explain, never a recipe (the study's DTd is the
# faithful default; its ablation covers the combiner and the bias at the study's budget)
ARCHITECTURE_CELLS = {"dtd-legacy", "dtd-c23", "dtd-bias-right"}
SATURATION = "init_saturation.json"
DATASET_ACTIONS = "dataset_actions.json"


def load(records: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """(dataset, cell) -> seed -> {"evals": {samples: best-target score}, "probe": {samples: losses}, "loss": last}."""
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for folder in sorted(records.glob("*/record.json")):
        rec = json.loads(folder.read_text())
        tags, run = rec["tags"], folder.parent
        cfg_batch = int(re.search(r"^batch_size: (\d+)", (run / "config.yaml").read_text(), re.M).group(1))
        evals, probe, loss = {}, {}, None
        for line in (run / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            samples = row["step"] * cfg_batch
            if "eval" in row:
                evals[samples] = max(t["normalized_mean"] for t in row["eval"].values())
            elif "probe" in row:
                probe[samples] = row["probe"]
            elif "loss" in row:
                loss = row["loss"]
        out.setdefault((tags["dataset"], tags["cell"]), {})[int(tags["seed"])] = dict(evals=evals, probe=probe, loss=loss)
    out.update(load_reference(records / REFERENCE))
    return out


def load_reference(folder: Path) -> dict[tuple[str, str], dict[int, dict]]:
    """reference_dt.py's raw returns, scored like dtd's runs: per checkpoint, the better target's mean
    normalized with dtd's reference returns. Cells d3rlpy-dt-lr<lr>, no probe and no train loss."""
    from dtd.data.refscores import normalize, ref_scores

    out: dict[tuple[str, str], dict[int, dict]] = {}
    for path in sorted(folder.glob("*.json")):
        rec = json.loads(path.read_text())
        lr = path.stem.rsplit("-lr", 1)[1].rsplit("-s", 1)[0]
        evals = {int(samples): max(float(np.mean(normalize(np.array(r), *ref_scores(rec["env"]))))
                                   for r in by_target.values())
                 for samples, by_target in rec["returns"].items()}
        out.setdefault((rec["dataset"], f"d3rlpy-dt-lr{lr}"), {})[int(rec["seed"])] = dict(evals=evals, probe={},
                                                                                           loss=None)
    return out


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if values else "—"


def score_table(data: dict, dataset: str) -> str:
    """One row per cell: score at 32k and 64k samples (mean ± std over seeds), each seed's two checkpoints."""
    rows = ["| cell | seeds | 32k samples | 64k samples | per seed (32k → 64k) | last train loss |",
            "|---|---|---|---|---|---|"]
    for cell, label in CELLS.items():
        seeds = data.get((dataset, cell))
        if not seeds:
            continue
        at = {n: [s["evals"][n] for s in seeds.values() if n in s["evals"]] for n in (32_000, 64_000)}
        per_seed = ", ".join(" → ".join(f"{s['evals'][n]:.0f}" for n in sorted(s["evals"])) for s in seeds.values())
        losses = [s["loss"] for s in seeds.values() if s["loss"] is not None]
        loss = f"{np.mean(losses):.4f}" if losses else "—"
        rows.append(f"| {label} | {len(seeds)} | {mean_std(at[32_000])} | {mean_std(at[64_000])} | {per_seed} | {loss} |")
    return "\n".join(rows)


def recipe_score(seeds: dict[int, dict]) -> tuple[float, float]:
    """(mean over seeds and both checkpoints, mean |score at 64k - score at 32k|): a recipe is judged on how
    early it scores and how steady its checkpoints are, not on one checkpoint."""
    pts = [v for s in seeds.values() for v in s["evals"].values()]
    swings = [abs(s["evals"][64_000] - s["evals"][32_000]) for s in seeds.values()
              if {32_000, 64_000} <= set(s["evals"])]
    return float(np.mean(pts)), float(np.mean(swings)) if swings else float("nan")


def cell_scores(data: dict, cell: str) -> tuple[int, dict[str, tuple[float, float]], float | None]:
    """(runs, dataset -> recipe_score, mean over the datasets or None unless every dataset has 2 seeds)."""
    per = {d: data.get((d, cell), {}) for d in DATASETS}
    score = {d: recipe_score(v) for d, v in per.items() if v}
    complete = all(len(v) >= 2 for v in per.values())
    mean = float(np.mean([score[d][0] for d in DATASETS])) if complete else None
    return sum(len(v) for v in per.values()), score, mean


def recipe_table(data: dict) -> str:
    """Each factor of each model's recipe: every option's score on both datasets (mean over seeds and the 32k
    and 64k checkpoints) and the mean swing between the two checkpoints; ✓ marks the option with the highest
    mean over the datasets once every option has 2 seeds on both."""
    rows = ["| model | factor | option | runs | halfcheetah mr | hopper mr | mean | swing 32k↔64k |",
            "|---|---|---|---|---:|---:|---:|---:|"]
    for model, factors in FACTORS.items():
        for factor, options in factors.items():
            scored = {option: cell_scores(data, cell) for option, cell in options.items()}
            complete = all(mean is not None for _, _, mean in scored.values())
            best = max(scored, key=lambda o: scored[o][2]) if complete else None
            for option, scores in scored.items():
                mark = " ✓" if option == best else ""
                rows.append(f"| {MODEL_LABELS[model]} | {factor} | {option}{mark} | {score_cols(*scores)} |")
    return "\n".join(rows)


def score_cols(runs: int, score: dict[str, tuple[float, float]], mean: float | None) -> str:
    """cell_scores as table cells: runs | each dataset's score | mean over the datasets | mean swing."""
    cols = [f"{score[d][0]:.1f}" if d in score else "—" for d in DATASETS]
    swing = f"{np.nanmean([s[1] for s in score.values()]):.1f}" if score else "—"
    return f"{runs} | {' | '.join(cols)} | {'—' if mean is None else f'{mean:.1f}'} | {swing}"


def reference_table(data: dict) -> str:
    """dtd's DT-small against d3rlpy's DT at each learning rate of the grid, scored as recipe_table scores."""
    rows = ["| lr | model | runs | halfcheetah mr | hopper mr | mean | swing 32k↔64k |", "|---|---|---|---:|---:|---:|---:|"]
    for lr in LRS:
        for cell in (f"dt-small-lr{lr}", f"d3rlpy-dt-lr{lr}"):
            scores = cell_scores(data, cell)
            if scores[0]:
                rows.append(f"| {lr} | {CELLS[cell].split(',')[0]} | {score_cols(*scores)} |")
    return "\n".join(rows)


def best_cells(data: dict) -> str:
    """Each model's recipe: its best complete training cell of the grid (2 seeds on both datasets) by the same
    mean as recipe_table's. Cells are measured configurations, so a recipe never combines factors untested
    together; ARCHITECTURE_CELLS change the model and are not candidates."""
    rows = ["| model | its best cell | mean | next best |", "|---|---|---:|---|"]
    for model, label in MODEL_LABELS.items():
        scored = sorted(((mean, cell) for cell in CELLS if cell.startswith(f"{model}-") and cell not in ARCHITECTURE_CELLS
                         for _, _, mean in [cell_scores(data, cell)] if mean is not None), reverse=True)
        if scored:
            nxt = f"{CELLS[scored[1][1]]} ({scored[1][0]:.1f})" if len(scored) > 1 else "—"
            rows.append(f"| {label} | {CELLS[scored[0][1]]} | {scored[0][0]:.1f} | {nxt} |")
    return "\n".join(rows)


def probe_table(data: dict) -> str:
    """Relative loss increase (%) with a_<t or the goal shuffled across the batch, mean over seeds."""
    rows = ["| dataset | cell | shuffled | 12.8k samples | 25.6k | 64k |", "|---|---|---|---|---|---|"]
    for dataset, dlabel in DATASETS.items():
        for cell in ("dtd-lr3e-4", "dt-small-lr3e-4", "dtd-lr1e-3", "dt-small-lr1e-3", "dtd-head0.1", "dtd-legacy"):
            seeds = data.get((dataset, cell))
            if not seeds:
                continue
            for what, key in (("a<t", "loss_shuffled_actions"), ("goal", "loss_shuffled_goals")):
                cells = []
                for n in (12_800, 25_600, 64_000):
                    vals = [100 * (s["probe"][n][key] / s["probe"][n]["loss"] - 1) for s in seeds.values() if n in s["probe"]]
                    cells.append(f"{np.mean(vals):+.1f}%" if vals else "—")
                rows.append(f"| {dlabel} | {CELLS[cell]} | {what} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def saturation_table(records: Path) -> str:
    path = records / SATURATION
    if not path.is_file():
        return "(not measured yet: run with --saturation)"
    sat = json.loads(path.read_text())
    rows = ["| model at initialisation | " + " | ".join(DATASETS.values()) + " |", "|---" * (1 + len(DATASETS)) + "|"]
    for label, by_data in sat["share_abs_gt_2"].items():
        rows.append(f"| {label} | " + " | ".join(f"{100 * by_data[d]:.1f}%" if d in by_data else "—" for d in DATASETS)
                    + " |")
    return "\n".join(rows)


def measure_saturation(records: Path) -> None:
    """Share of pre-tanh head outputs with |x| > 2 at initialisation, 4,096 real windows, seeds 0-2."""
    import torch

    from dtd.data.loaders import load_dataset
    from dtd.data.sampler import SequenceSampler
    from dtd.models import build_model

    variants = {"DTd (faithful default)": ("dtd", {}), "DTd, head init x0.1": ("dtd", {"head_init_scale": 0.1}),
                "DTd (dtd 0.1 default)": ("dtd", {"timestep_tables": "per_stream", "join_timestep": True,
                                                  "embed_dropout": True, "cross_attn_dropout": True,
                                                  "init": "separate_qkv"}),
                "DT-small": ("dt-small", {}), "DT-large": ("dt-large", {})}
    sources = {"hopper-medium-replay": "zoo/hopper/medium-replay-v0",
               "halfcheetah-medium-replay": "zoo/halfcheetah/medium-replay-v0"}
    share: dict[str, dict[str, float]] = {label: {} for label in variants}
    for key, source in sources.items():
        data = load_dataset(source)
        mean, std = data.state_stats()
        batch = SequenceSampler(data, 20, 1000.0, seed=0, state_mean=mean, state_std=std).sample(4096)
        b = {k: torch.from_numpy(v) for k, v in batch.items()}
        for label, (name, opts) in variants.items():
            fracs = []
            for seed in range(3):
                torch.manual_seed(seed)
                model = build_model(name, data.obs_dim, data.act_dim, **opts).eval()
                pre = []
                model.head.register_forward_hook(lambda m, i, o: pre.append(o))
                with torch.no_grad():
                    model(b["states"], b["actions"], b["goals"], b["timesteps"], mask=b["mask"])
                valid = b["mask"].bool()
                fracs.append(float((pre[-1][valid].abs() > 2).float().mean()))
            share[label][key] = float(np.mean(fracs))
    _write(records / SATURATION, json.dumps({"share_abs_gt_2": share, "windows": 4096, "seeds": [0, 1, 2]}, indent=1))


def standstill_table(records: Path) -> str:
    """On halfcheetah a policy that ignores its goal stands still at the start state: the share of evaluation
    episodes at 64k samples (eval.json, both targets, every seed) scoring below 5, and the mean of the others."""
    rows = ["| halfcheetah medium-replay | runs | episodes standing still (< 5) | mean score of the others |",
            "|---|---|---|---|"]
    for cell, label in CELLS.items():
        scores = []
        for path in sorted(records.glob(f"halfcheetah-medium-replay-{cell}-s*/eval.json")):
            scores.append([x for t in json.loads(path.read_text())["targets"].values() for x in t["normalized"]])
        if not scores:
            continue
        flat = np.concatenate(scores)
        moving = flat[flat >= 5]
        rows.append(f"| {label} | {len(scores)} | {int((flat < 5).sum())} of {flat.size} | "
                    f"{f'{moving.mean():.1f}' if moving.size else '—'} |")
    path = records / DATASET_ACTIONS
    if path.is_file():
        d = json.loads(path.read_text())
        rows.append(f"| the dataset's actions: mean abs {d['mean_abs_action']:.2f}; at its {d['episodes']} episode "
                    f"starts mean abs {d['mean_abs_action_at_start']:.2f}, mean {d['mean_action_at_start']:.2f}, "
                    f"per-dimension std {d['std_action_at_start']:.2f} | | | |")
    return "\n".join(rows)


def measure_dataset_actions(records: Path) -> None:
    """The halfcheetah medium-replay data's action magnitudes, overall and at episode starts."""
    from dtd.data.loaders import load_dataset

    data = load_dataset("zoo/halfcheetah/medium-replay-v0")
    starts = np.stack([e.actions[0] for e in data.episodes])  # (episodes, A)
    out = {"mean_abs_action": float(np.abs(np.concatenate([e.actions for e in data.episodes])).mean()),
           "episodes": len(starts), "mean_abs_action_at_start": float(np.abs(starts).mean()),
           "mean_action_at_start": float(starts.mean()), "std_action_at_start": float(starts.std(0).mean())}
    _write(records / DATASET_ACTIONS, json.dumps(out, indent=1, sort_keys=True) + "\n")


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(sum((d, c) in data for c in CELLS) for d in DATASETS)
    fig, axes = plt.subplots(1, len(DATASETS), figsize=(13, max(5.0, 1.8 + 0.32 * rows)), squeeze=False)
    for ax, (dataset, dlabel) in zip(axes[0], DATASETS.items()):
        labels, means, stds, seeds_pts, early_pts = [], [], [], [], []
        for cell, label in CELLS.items():
            seeds = data.get((dataset, cell))
            if not seeds:
                continue
            last = [s["evals"][max(s["evals"])] for s in seeds.values() if s["evals"]]
            labels.append(label)
            means.append(np.mean(last))
            stds.append(np.std(last))
            seeds_pts.append(last)
            early_pts.append([s["evals"][n] for s in seeds.values() for n in s["evals"] if n < max(s["evals"])])
        y = np.arange(len(labels))
        ax.barh(y, means, xerr=stds, color=["C0" if lb.startswith("DTd") else "C1" if lb.startswith("DT-") else
                                            "C3" if lb.startswith("d3rlpy") else "C2"
                                            for lb in labels], alpha=0.7)
        for i, (pts, early) in enumerate(zip(seeds_pts, early_pts)):
            ax.plot(pts, [i] * len(pts), "k.", ms=5, label="seed at 64k" if i == 0 else None)
            ax.plot(early, [i + 0.2] * len(early), "x", color="0.4", ms=5, label="seed at 32k" if i == 0 else None)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("D4RL normalized score at 64k samples, mean ± std (best target)")
        if labels:
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
        ax.set_title(dlabel)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def tables(data: dict, records: Path) -> dict[str, str]:
    """Every diagnosis block of RESULTS.md, name -> table (also called by make_results.py)."""
    out = {f"diagnosis_{d.split('-')[0]}": score_table(data, d) for d in DATASETS}
    out["diagnosis_recipe"] = recipe_table(data)
    out["diagnosis_best"] = best_cells(data)
    out["diagnosis_reference"] = reference_table(data)
    out["diagnosis_probe"] = probe_table(data)
    out["diagnosis_saturation"] = saturation_table(records)
    out["diagnosis_standstill"] = standstill_table(records)
    return out


def fill(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default=str(RECORDS), help="the diagnosis records (default results/diagnosis)")
    parser.add_argument("--results", default=str(ROOT / "RESULTS.md"), help="markdown file whose blocks are filled")
    parser.add_argument("--figure", default=str(ROOT / "docs" / "results" / "diagnosis.png"))
    parser.add_argument("--saturation", action="store_true", help="measure the head saturation first (datasets)")
    parser.add_argument("--dataset-actions", action="store_true",
                        help="first measure halfcheetah medium-replay's action magnitudes (datasets)")
    args = parser.parse_args()
    records = Path(args.records)
    if args.saturation:
        measure_saturation(records)
    if args.dataset_actions:
        measure_dataset_actions(records)
    data = load(records)
    if not data:
        print(f"make_diagnosis: no records under {records}", file=sys.stderr)
        return 2
    tables_ = tables(data, records)
    plot(data, Path(args.figure))
    results = Path(args.results)
    text = results.read_text()
    for name, table in tables_.items():
        text = fill(text, name, table)
    _write(results, text)
    print(f"wrote {args.figure} and the diagnosis tables in {results} ({sum(map(len, data.values()))} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
