"""`dtd attention`: the paper's multimodal attention quantification of a trained run (or two, compared)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention", help="quantify how a trained model attends to goal, state and action",
        description="Score N windows (9 ordered modality scores each, the spec's recipe) and write "
                    "attention_scores.csv, attention_summary.json and attention_heatmap.png. "
                    "With --compare RUN_A RUN_B: both heatmaps in one figure.")
    p.add_argument("run_dir", nargs="?", help="a training run folder (DT: the paper's analysis; DTd: its join network)")
    p.add_argument("--dataset", help="windows from this dataset source (default: the run's own dataset)")
    p.add_argument("--windows", type=int, default=256, help="number of windows to score (default 256)")
    p.add_argument("--layer", choices=["last", "mean"], default="last", help="last layer, or the mean over layers")
    p.add_argument("--rollout", action="store_true", help="take windows from fresh evaluation episodes instead")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default RUN_DIR/attention)")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="analyse two runs (or reuse their attention_summary.json) and draw both heatmaps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dtd.analysis import attention as att
    from dtd.errors import DtdError

    if args.compare:
        if args.run_dir:
            raise DtdError("attention: give either RUN_DIR or --compare RUN_A RUN_B, not both")
        summaries = [_analyse(att, Path(r), args) for r in args.compare]
        out = Path(args.out or ".") / "attention_compare.png"
        att.plot_heatmaps(summaries, out, titles=[_title(s, r) for s, r in zip(summaries, args.compare)])
        print(f"wrote {out}")
        return 0
    if not args.run_dir:
        raise DtdError("attention: give a RUN_DIR (or --compare RUN_A RUN_B)")
    _analyse(att, Path(args.run_dir), args)
    return 0


def _analyse(att, run_dir: Path, args: argparse.Namespace) -> dict:
    ws, summary = att.analyze_run(run_dir, args.dataset, args.windows, args.layer, args.rollout, args.seed)
    out = Path(args.out) / run_dir.name if (args.out and args.compare) else Path(args.out or run_dir / "attention")
    paths = att.write_outputs(ws, summary, out)
    print(att.format_summary(summary))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return summary


def _title(summary: dict, run: str) -> str:
    kind = "join network" if summary.get("network") == "join" else f"{summary['layer']} layer"
    return f"{Path(run).name}\n{summary['model']}, {kind}"
