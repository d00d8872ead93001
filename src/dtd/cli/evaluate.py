"""`dtd eval` (re-evaluate a run's checkpoint in the simulator) and `dtd report` (compare runs)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run's checkpoint in the simulator",
                       description="Roll a run's checkpoint out in its Gymnasium environment for each target return (every "
                       "target's episodes together in one batch, episode i of each target seeded seed+i); writes RUN_DIR/eval-<checkpoint>.json "
                       "(the training-time eval.json is left as it is) and prints a table.")  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by dtd train")
    p.add_argument("--checkpoint", default="last", help="checkpoint name under RUN_DIR/checkpoints (default: last)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per target (default: the run's eval_episodes)")
    p.add_argument("--targets", type=float, nargs="+", default=None,
                   help="target returns (default: the run's eval_targets, else the spec's for the task)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (default: 0)")
    p.add_argument("--max-steps", type=int, default=None, help="cap on episode length (default: the run's)")
    p.add_argument("--vector", choices=["sync", "async"], default=None,
                   help="vector env kind (default: sync, the faster one on a small CPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="CPU processes sharing the episodes (forked; same returns); 2 on a 2-core machine "
                        "runs model calls and MuJoCo steps side by side (default: the run's eval_workers, else 1)")
    p.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda[:N]")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("report", help="table and learning curves over runs and seeds",
                       description="Group run folders by (preset, dataset); write report.md (final normalized "
                       "score, mean ± std over seeds, best target and per target) and curves.png "
                       "(score vs training step, mean and ±std band).")  # fmt: skip
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run folders written by dtd train")
    p.add_argument("--out", default="report", help="output folder (default: ./report)")
    p.set_defaults(func=run_report)


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from dtd.errors import DtdError
    from dtd.evaluation.rollout import evaluate_run, format_table
    from dtd.training.checkpoint import CKPT_DIR, find_checkpoint, load_run

    run, name = Path(args.run_dir), args.checkpoint.removesuffix(".pt")
    path = find_checkpoint(run) if name == "last" else run / CKPT_DIR / f"{name}.pt"  # clear errors for non-runs
    if not path.is_file():
        have = sorted(p.stem for p in (run / CKPT_DIR).glob("*.pt"))
        raise DtdError(f"{run}: no checkpoint '{name}' (have: {', '.join(have) or 'none'})")
    if args.episodes is not None and args.episodes < 1:
        raise DtdError(f"--episodes must be >= 1, got {args.episodes}")
    if args.workers is not None and args.workers < 1:
        raise DtdError(f"--workers must be >= 1, got {args.workers}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model, ckpt = load_run(path, map_location=device)
    workers = args.workers if args.workers is not None else (ckpt.get("config") or {}).get("eval_workers", 1)
    overrides = {k: v for k, v in (("max_steps", args.max_steps), ("vector", args.vector)) if v is not None}
    overrides["workers"] = workers if device == "cpu" else 1
    result = evaluate_run(model.to(device), ckpt, episodes=args.episodes, targets=args.targets, seed=args.seed,
                          device=device, **overrides)  # fmt: skip
    result.update(checkpoint=name, step=int(ckpt["step"]))
    out = run / f"eval-{name}.json"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(format_table(result))
    print(f"checkpoint {name} (step {result['step']}); wrote {out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from dtd.evaluation.report import write_report

    written = write_report(args.run_dirs, args.out)
    print(Path(written["table"]).read_text(), end="")
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
