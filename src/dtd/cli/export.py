"""`dtd export RUN_DIR --format torchscript|onnx --out FILE`: a run's policy as one deployable file."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run's policy to TorchScript or ONNX",
                       description="Write the run's inference function (normalisation inside; fixed K-window "
                                   "inputs: observations, actions, goals, timesteps, mask) to one file.")
    p.add_argument("run_dir", help="a training run folder")
    p.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    p.add_argument("--out", required=True, help="output file (e.g. policy.pt or policy.onnx)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dtd.export import export_run, load_exported

    path = export_run(args.run_dir, args.format, args.out)
    _, meta = load_exported(path)
    print(f"wrote {path} ({args.format}): inputs observations (N,{meta['context_len']},{meta['obs_dim']}), "
          f"actions (N,{meta['context_len']},{meta['act_dim']}), goals (N,{meta['context_len']},{meta['goal_dim']}), "
          f"timesteps (N,{meta['context_len']}), mask (N,{meta['context_len']}) -> action (N,{meta['act_dim']})")
    return 0
