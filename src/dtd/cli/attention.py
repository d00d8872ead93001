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
    p.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda | cuda:N | mps: where the model runs")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                   help="analyse two runs (or reuse their attention_summary.json) and draw both heatmaps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dtd.analysis import attention as att
    from dtd.device import resolve_device
    from dtd.errors import DtdError
    from dtd.paths import check_output_dir, check_output_file

    if args.compare:
        if args.run_dir:
            raise DtdError("attention: give either RUN_DIR or --compare RUN_A RUN_B, not both")
        names = [Path(r).resolve().name for r in args.compare]
        if names[0] == names[1]:
            raise DtdError(f"attention --compare: both runs are named {names[0]!r}; their outputs would collide")
    elif not args.run_dir:
        raise DtdError("attention: give a RUN_DIR (or --compare RUN_A RUN_B)")
    device = resolve_device(args.device)
    runs = [Path(r) for r in (args.compare or [args.run_dir])]
    outs = [_out_dir(r, args) for r in runs]
    for out in outs:  # every destination checked before any work
        att.check_outputs(out)
    if args.out is not None:
        check_output_dir(args.out, "attention --out")
    folder = Path(args.out if args.out is not None else ".")
    figure = check_output_file(folder / "attention_compare.png", "attention --out") if args.compare else None
    # analyse every run before writing anything: a run that fails to load leaves no partial output
    results = [att.analyze_run(r, args.dataset, args.windows, args.layer, args.rollout, args.seed, device=device)
               for r in runs]
    for (ws, summary), out in zip(results, outs):
        paths = att.write_outputs(ws, summary, out)
        print(att.format_summary(summary))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    if figure is not None:
        summaries = [summary for _, summary in results]
        att.plot_heatmaps(summaries, figure, titles=[_title(s, r) for s, r in zip(summaries, args.compare)])
        print(f"wrote {figure}")
    return 0


def _out_dir(run_dir: Path, args: argparse.Namespace) -> Path:
    if args.compare:
        return Path(args.out if args.out is not None else ".") / run_dir.resolve().name
    return Path(args.out) if args.out is not None else run_dir / "attention"


def _title(summary: dict, run: str) -> str:
    kind = "join network" if summary.get("network") == "join" else f"{summary['layer']} layer"
    return f"{Path(run).name}\n{summary['model']}, {kind}"
