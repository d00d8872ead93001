"""Regenerate RESULTS.md's tables and docs/results/*.png from the run folders of experiments/run_results.py.

    MINARI_DATASETS_PATH=../shared/datasets .venv/bin/python experiments/make_results.py

Reads runs/results/{main,ablation}/*/ (config.yaml, eval.json, metrics.jsonl), writes the figures to
docs/results/, all tables to docs/results/tables.md, and replaces every block between
`<!-- BEGIN name -->` and `<!-- END name -->` in RESULTS.md with the table of that name. A seed's score is
its final evaluation at its best target (the mean over its episodes); cells are mean ± std over seeds
(ddof=0). With the datasets reachable, the dataset's own mean normalized return is shown beside each row.
The attention comparison re-scores 256 windows of the seed-0 DT-small and DTd runs (`--no-attention` skips).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from dtd.evaluation.report import RunScores, load_run_scores

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"dtd": "DTd", "dt-small": "DT-small", "dt-large": "DT-large", "bc": "BC"}
DATASETS = {  # run-name prefix -> (label, dataset source)
    "hopper-medium": ("hopper medium", "zoo/hopper/medium-v0"),
    "hopper-medium-replay": ("hopper medium-replay", "zoo/hopper/medium-replay-v0"),
    "hopper-medium-expert": ("hopper medium-expert", "zoo/hopper/medium-v0+zoo/hopper/expert-v0"),
    "halfcheetah-medium-replay": ("halfcheetah medium-replay", "zoo/halfcheetah/medium-replay-v0"),
}
ABLATIONS = [  # (label, run-name stem); "all" and "c22" are the main table's DTd runs
    ("bias b0", "ablation/hopper-medium-replay-bias-b0"), ("bias left", "ablation/hopper-medium-replay-bias-left"),
    ("bias right", "ablation/hopper-medium-replay-bias-right"), ("bias all (default)", "main/hopper-medium-replay-dtd"),
    ("combiner c21", "ablation/hopper-medium-replay-combiner-c21"),
    ("combiner c22 (default)", "main/hopper-medium-replay-dtd"),
    ("combiner c23", "ablation/hopper-medium-replay-combiner-c23"),
]
CURVE_RUNS = [("DTd", "main/hopper-medium-replay-dtd"), ("DT-small", "main/hopper-medium-replay-dt-small")]
LONG_CURVE_RUNS = [("DTd", "curve/hopper-medium-replay-dtd-long"), ("DT-small", "curve/hopper-medium-replay-dt-small-long")]
LONG_CURVE_RUNS_HC = [("DTd", "curve/halfcheetah-medium-replay-dtd-long"),
                      ("DT-small", "curve/halfcheetah-medium-replay-dt-small-long")]
ATTENTION_RUNS = [("DT-small", "main/hopper-medium-dt-small-s0"), ("DTd", "main/hopper-medium-dtd-s0")]


# ---- reading runs -------------------------------------------------------------------------------


def load_runs(root: Path) -> dict[str, list[RunScores]]:
    """'main/hopper-medium-dtd' -> its finished seeds (folders named STEM-sSEED with an eval.json)."""
    runs: dict[str, list[RunScores]] = {}
    for folder in sorted(root.glob("*/*")):
        named = re.fullmatch(r"(.+)-s[0-9]+", folder.name)
        if not named or not (folder / "eval.json").is_file():
            continue
        stem = f"{folder.parent.name}/{named.group(1)}"
        runs.setdefault(stem, []).append(load_run_scores(folder))
    return runs


def cell(runs: list[RunScores] | None, bold: bool = False) -> str:
    if not runs:
        return "—"
    best = [r.best for r in runs]
    text = f"{np.mean(best):.1f} ± {np.std(best):.1f}"
    return (f"**{text}**" if bold else text) + ("" if len(runs) == 3 else f" (n={len(runs)})")


def run_compute(run: RunScores) -> dict[str, float]:
    """Training samples/s (median of the logged intervals), evaluation seconds, and wall seconds of one run."""
    lines = [json.loads(t) for t in (run.path / "metrics.jsonl").read_text().splitlines() if t.strip()]
    sps = [x["samples_per_s"] for x in lines if "samples_per_s" in x]
    ev = json.loads((run.path / "eval.json").read_text())
    wall = (run.path / "eval.json").stat().st_mtime - (run.path / "config.yaml").stat().st_mtime
    return {"samples_per_s": float(np.median(sps)) if sps else float("nan"), "eval_s": float(ev.get("seconds", 0.0)),
            "wall_s": wall, "steps": int(ev.get("step", 0))}


def dataset_scores() -> dict[str, float]:
    """Mean normalized return of each dataset's episodes (needs MINARI_DATASETS_PATH), else {}."""
    if not os.environ.get("MINARI_DATASETS_PATH"):
        return {}
    from dtd.data.loaders import load_dataset

    out = {}
    for key, (_, source) in DATASETS.items():
        try:
            data = load_dataset(source)
            out[key] = float(np.mean(data.normalized_score(data.returns())))
        except Exception as exc:  # a missing dataset only drops the reference column
            print(f"make_results: {source}: {exc}", file=sys.stderr)
    return out


# ---- tables --------------------------------------------------------------------------------------


def main_table(runs: dict[str, list[RunScores]], behaviour: dict[str, float]) -> str:
    head = ["dataset", *MODELS.values(), "dataset mean"]
    rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for key, (label, _) in DATASETS.items():
        found = {m: runs.get(f"main/{key}-{m}") for m in MODELS}
        means = {m: np.mean([r.best for r in v]) for m, v in found.items() if v}
        top = max(means, key=means.get) if means else None
        ref = f"{behaviour[key]:.1f}" if key in behaviour else "—"
        rows.append(f"| {label} | " + " | ".join(cell(found[m], m == top) for m in MODELS) + f" | {ref} |")
    return "\n".join(rows)


def seeds_table(runs: dict[str, list[RunScores]]) -> str:
    rows = ["| run | seed | best target | score at best | other target | compute: samples/s, eval s, wall s |",
            "|---|---:|---:|---:|---:|---|"]
    for stem in sorted(runs):
        for r in sorted(runs[stem], key=lambda r: r.seed):
            best_t = max(r.final, key=r.final.get)
            other = ", ".join(f"{t}: {v:.1f}" for t, v in r.final.items() if t != best_t)
            c = run_compute(r)
            rows.append(f"| {stem} | {r.seed} | {best_t} | {r.final[best_t]:.1f} | {other} | "
                        f"{c['samples_per_s']:.0f}, {c['eval_s']:.0f}, {c['wall_s']:.0f} |")
    return "\n".join(rows)


def ablation_table(runs: dict[str, list[RunScores]]) -> str:
    rows = ["| DTd variant (hopper medium-replay) | normalized score |", "|---|---:|"]
    rows += [f"| {label} | {cell(runs.get(stem))} |" for label, stem in ABLATIONS]
    return "\n".join(rows)


def curve_points(runs: list[RunScores]) -> tuple[list[int], np.ndarray]:
    """The steps every seed evaluated at, and the (seeds, steps) best-target scores."""
    curves = [dict(r.curve) for r in runs if r.curve]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return steps, np.array([[c[s] for s in steps] for c in curves])


def curve_table(runs: dict[str, list[RunScores]], spec: list[tuple[str, str]]) -> str:
    series = {label: curve_points(runs.get(stem, [])) for label, stem in spec}
    steps = sorted({s for st, _ in series.values() for s in st})
    rows = ["| training step | " + " | ".join(series) + " |", "|---:|" + "---:|" * len(series)]
    for s in steps:
        cells = []
        for st, vals in series.values():
            cells.append(f"{vals[:, st.index(s)].mean():.1f} ± {vals[:, st.index(s)].std():.1f}" if s in st else "—")
        rows.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def compute_table(runs: dict[str, list[RunScores]]) -> str:
    groups = {label: [r for stem, rs in runs.items() if stem.startswith("main/") and stem.endswith(f"-{model}")
                      for r in rs] for model, label in MODELS.items()}
    groups["DTd ablations"] = [r for stem, rs in runs.items() if stem.startswith("ablation/") for r in rs]
    rows = ["| model | runs | training samples/s (median) | mean wall per run | evaluation share | total wall |",
            "|---|---:|---:|---:|---:|---:|"]
    for label, chosen in groups.items():
        if not chosen:
            continue
        cs = [run_compute(r) for r in chosen]
        wall = sum(c["wall_s"] for c in cs)
        rows.append(f"| {label} | {len(cs)} | {np.median([c['samples_per_s'] for c in cs]):.0f} | "
                    f"{wall / len(cs):.0f} s | {sum(c['eval_s'] for c in cs) / wall:.0%} | {wall / 60:.0f} min |")
    return "\n".join(rows)


# ---- figures -------------------------------------------------------------------------------------


def _finish(fig, ax, path: Path, title: str, ylabel: str = "D4RL normalized score", legend: dict | None = None,
            grid_axis: str = "y") -> None:
    """Label, lay out and save (to a temporary name, then renamed) one figure."""
    import matplotlib.pyplot as plt

    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis=grid_axis, alpha=0.3)
    if legend is not None and ax.get_legend_handles_labels()[0]:
        ax.legend(**legend)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


def plot_main(runs: dict[str, list[RunScores]], behaviour: dict[str, float], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / len(MODELS)
    for i, (model, label) in enumerate(MODELS.items()):
        for j, key in enumerate(DATASETS):
            rs = runs.get(f"main/{key}-{model}", [])
            if not rs:
                continue
            best = [r.best for r in rs]
            x = j + (i - (len(MODELS) - 1) / 2) * width
            ax.bar(x, np.mean(best), width * 0.9, yerr=np.std(best), capsize=3, color=f"C{i}",
                   label=label if j == 0 else None)
            ax.plot([x] * len(best), best, "k.", ms=4)
    for j, key in enumerate(DATASETS):
        if key in behaviour:
            ax.hlines(behaviour[key], j - 0.45, j + 0.45, colors="gray", linestyles="--",
                      label="dataset mean" if j == 0 else None)
    ax.set_xticks(range(len(DATASETS)), [v[0] for v in DATASETS.values()])
    _finish(fig, ax, path, "Final score, best target (bars: mean ± std over seeds; dots: seeds)",
            legend=dict(fontsize=8, ncol=5))


def plot_ablation(runs: dict[str, list[RunScores]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, (label, stem) in enumerate(ABLATIONS):
        best = [r.best for r in runs.get(stem, [])]
        if best:
            ax.bar(i, np.mean(best), 0.7, yerr=np.std(best), capsize=3, color="C0" if "bias" in label else "C1")
            ax.plot([i] * len(best), best, "k.", ms=4)
    ax.set_xticks(range(len(ABLATIONS)), [a[0].replace(" (default)", "\n(default)") for a in ABLATIONS], fontsize=8)
    _finish(fig, ax, path, "DTd ablations on hopper medium-replay (mean ± std over seeds)")


def plot_curves(runs: dict[str, list[RunScores]], path: Path) -> None:
    """Three panels: the main table's hopper runs (evaluated every 100 steps) and the longer runs."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = ((axes[0], CURVE_RUNS, "hopper medium-replay, main-table runs"),
              (axes[1], LONG_CURVE_RUNS, "hopper medium-replay, longer runs"),
              (axes[2], LONG_CURVE_RUNS_HC, "halfcheetah medium-replay, longer runs"))
    for ax, spec, what in panels:
        for i, (label, stem) in enumerate(spec):
            steps, vals = curve_points(runs.get(stem, []))
            if not steps:
                continue
            mean, std = vals.mean(0), vals.std(0)
            seeds = f"{len(vals)} seed" + ("s" if len(vals) > 1 else "")
            ax.plot(steps, mean, marker="o", color=f"C{i}", label=f"{label} ({seeds})")
            ax.fill_between(steps, mean - std, mean + std, color=f"C{i}", alpha=0.2, lw=0)
        ax.set_xlabel("training step (batch 64)")
        ax.set_title(what)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    _finish(fig, axes[0], path, "hopper medium-replay, main-table runs (band: ±std over seeds)",
            "D4RL normalized score (best target)", grid_axis="both")


def attention(root: Path, out: Path) -> str:
    """Score the seed-0 DT-small and DTd runs' attention on their dataset; heatmaps and a share table."""
    from dtd.analysis import attention as att

    summaries = []
    for label, stem in ATTENTION_RUNS:
        _, summary = att.analyze_run(root / stem, windows=256, progress=False)
        (out / f"attention-{stem.split('/')[-1]}.json").write_text(json.dumps(summary, indent=1) + "\n")
        summaries.append(summary)
    titles = [f"{label}, {s['source']}\n{'join network' if s['network'] == 'join' else 'last layer'}"
              for (label, _), s in zip(ATTENTION_RUNS, summaries)]
    att.plot_heatmaps(summaries, out / "attention_compare.png", titles=titles)
    names = list(summaries[0]["share"])
    rows = ["| query → key | " + " | ".join(label for label, _ in ATTENTION_RUNS) + " |",
            "|---|" + "---:|" * len(ATTENTION_RUNS)]
    arrow = {"r": "goal", "s": "state", "a": "action"}
    for k in names:
        cells = [f"{s['share'][k]:.1%}" if k[0] in s["tokens"] and k[1] in s["tokens"] else "n/a" for s in summaries]
        rows.append(f"| {arrow[k[0]]} → {arrow[k[1]]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ---- RESULTS.md ------------------------------------------------------------------------------------


def fill(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def main() -> int:
    import matplotlib

    matplotlib.use("Agg")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=str(ROOT / "runs" / "results"), help="the sweep's run folders")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results"), help="figures and tables.md")
    parser.add_argument("--results", default=str(ROOT / "RESULTS.md"), help="markdown file whose blocks are filled")
    parser.add_argument("--no-attention", action="store_true", help="skip the attention re-scoring")
    args = parser.parse_args()
    root, out = Path(args.runs), Path(args.out)
    runs = load_runs(root)
    if not runs:
        print(f"make_results: no finished runs under {root}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    behaviour = dataset_scores()
    tables = {"main": main_table(runs, behaviour), "ablation": ablation_table(runs), "curve": curve_table(runs, CURVE_RUNS),
              "curve_long": curve_table(runs, LONG_CURVE_RUNS),
              "curve_long_halfcheetah": curve_table(runs, LONG_CURVE_RUNS_HC),
              "compute": compute_table(runs), "seeds": seeds_table(runs)}
    plot_main(runs, behaviour, out / "main_scores.png")
    plot_ablation(runs, out / "ablation.png")
    plot_curves(runs, out / "sample_efficiency.png")
    if not args.no_attention and all((root / stem / "eval.json").is_file() for _, stem in ATTENTION_RUNS):
        tables["attention"] = attention(root, out)
    md = "\n\n".join(f"## {name}\n\n{table}" for name, table in tables.items()) + "\n"
    (out / "tables.md").write_text(md)
    results = Path(args.results)
    if results.is_file():
        text = results.read_text()
        for name, table in tables.items():
            text = fill(text, name, table)
        tmp = results.with_name(results.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, results)
    print(f"wrote {out}/tables.md, {out}/*.png" + (f" and the tables in {results}" if results.is_file() else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
