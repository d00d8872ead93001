"""`dtd eval` (re-evaluate a run's checkpoint in the simulator) and `dtd report` (compare runs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dtd.cli import finite_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run's checkpoint in the simulator",
                       description="Roll a run's checkpoint out in its Gymnasium environment for each target return (every "
                       "target's episodes together in one batch, episode i of each target seeded seed+i); writes RUN_DIR/eval-<checkpoint>.json "
                       "(the training-time eval.json is left as it is) and prints a table.")  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by dtd train")
    p.add_argument("--checkpoint", default=None,
                   help="checkpoint name under RUN_DIR/checkpoints (default: last); RUN_DIR may also be a checkpoint "
                        "file, evaluated and named as itself")
    p.add_argument("--episodes", type=int, default=None, help="episodes per target (default: the run's eval_episodes)")
    p.add_argument("--targets", type=finite_float, nargs="+", default=None,
                   help="target returns (default: the run's eval_targets, else the spec's for the task)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (default: 0)")
    p.add_argument("--max-steps", type=int, default=None, help="cap on episode length (default: the run's)")
    p.add_argument("--vector", choices=["sync", "async"], default=None,
                   help="vector env kind (default: sync, the faster one on a small CPU)")
    p.add_argument("--workers", type=int, default=None,
                   help="CPU processes sharing the episodes (forked; same returns); 2 on a 2-core machine "
                        "runs model calls and MuJoCo steps side by side (default: the run's eval_workers, else 1)")
    p.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda | cuda:N | mps")
    p.add_argument("--env", default=None,
                   help="evaluate in another environment with the run's spaces (default: the run's); --fixed-goal "
                        "is the maze's D4RL-style fixed start and goal. The result goes to eval-<checkpoint>-<env>.json")
    p.add_argument("--fixed-goal", action="store_true",
                   help="mazes: start in one arm, goal at the far end (dtd/<maze id>_D4RL), not the env's random cells")
    p.set_defaults(func=run_eval)

    p = sub.add_parser("report", help="table and learning curves over runs and seeds",
                       description="Group run folders by (preset, dataset); write report.md (final normalized "
                       "score, mean ± std over seeds, best target and per target) and curves.png "
                       "(score vs training step, mean and ±std band).")  # fmt: skip
    p.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run folders written by dtd train")
    p.add_argument("--out", default="report", help="output folder (default: ./report)")
    p.set_defaults(func=run_report)


def run_eval(args: argparse.Namespace) -> int:
    from dtd.config import check_seed
    from dtd.device import resolve_device
    from dtd.errors import DtdError
    from dtd.evaluation import evaluate_run
    from dtd.paths import CKPT_DIR, check_output_file, write_text_atomic
    from dtd.runs import find_checkpoint, load_run

    run, name = Path(args.run_dir), (args.checkpoint or "last").removesuffix(".pt")
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise DtdError(f"--checkpoint: {args.checkpoint!r} is not a checkpoint name (e.g. last, step_0001000)")
    if run.is_file():  # a checkpoint file: evaluated, and its result named, as itself (never as "last")
        if args.checkpoint is not None and name != run.stem:
            raise DtdError(f"{run} is a checkpoint file; --checkpoint {args.checkpoint} names another one (give one)")
        name = run.stem
    path = find_checkpoint(run) if name == "last" or run.is_file() else run / CKPT_DIR / f"{name}.pt"
    if not path.is_file():
        have = sorted(p.stem for p in (run / CKPT_DIR).glob("*.pt"))
        raise DtdError(f"{run}: no checkpoint '{name}' (have: {', '.join(have) or 'none'})")
    for flag, value in (("--episodes", args.episodes), ("--workers", args.workers), ("--max-steps", args.max_steps)):
        if value is not None and value < 1:
            raise DtdError(f"{flag} must be >= 1, got {value}")
    check_seed(args.seed)
    device = resolve_device(args.device)
    folder = run if run.is_dir() else path.parents[1] if path.parent.name == CKPT_DIR else path.parent
    model, info = load_run(path)  # read on the CPU: a checkpoint saved on a GPU loads anywhere
    env_id = other_env(args, info, model)
    suffix = "" if env_id is None else "-" + env_id.replace("/", "_")
    out = check_output_file(folder / f"eval-{name}{suffix}.json", "eval result")
    workers = args.workers if args.workers is not None else info.config.eval_workers
    result = evaluate_run(model.to(device), info, device, episodes=args.episodes, targets=args.targets,
                          seed=args.seed, max_steps=args.max_steps, vector=args.vector, env_id=env_id,
                          workers=workers if device == "cpu" else 1)  # fmt: skip
    result.update(checkpoint=name, step=info.step)
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"checkpoint {name} (step {result['step']}); wrote {out}")
    return 0


def other_env(args: argparse.Namespace, info, model) -> str | None:
    """The environment --env / --fixed-goal ask for (None: the run's own), checked against the run's spaces."""
    from types import SimpleNamespace

    from dtd.envs import check_env_compat, fixed_goal_id
    from dtd.errors import DtdError

    if args.fixed_goal and args.env:
        raise DtdError("--env and --fixed-goal both name the environment; give one")
    env_id = fixed_goal_id(info.env_id or "") if args.fixed_goal else args.env
    if env_id is not None:
        dims = SimpleNamespace(name=str(args.run_dir), obs_dim=int(info.state_mean.size),
                               act_dim=int(model.config.act_dim))
        check_env_compat(dims, env_id)
    return env_id


def format_table(result: dict) -> str:
    """A plain-text table of one evaluate() result: a row per target."""
    rows = [f"{result['env_id']}: {result['episodes']} episodes per target, seeds {result['seed']}.."
            f"{result['seed'] + result['episodes'] - 1}"]  # fmt: skip
    rows.append(f"{'target':>8}  {'return':>18}  {'normalized':>14}  {'length':>7}")
    for key, t in result["targets"].items():
        norm = f"{t['normalized_mean']:6.1f} ± {t['normalized_std']:5.1f}" if "normalized_mean" in t else "—"
        rows.append(f"{key:>8}  {t['return_mean']:9.1f} ± {t['return_std']:6.1f}  {norm:>14}  {t['length_mean']:7.1f}")
    return "\n".join(rows)


def run_report(args: argparse.Namespace) -> int:
    from dtd.evaluation.report import write_report

    written = write_report(args.run_dirs, args.out)
    print(Path(written["table"]).read_text(), end="")
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0
