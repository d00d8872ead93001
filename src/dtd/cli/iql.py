"""`dtd iql train DATASET`: learn an IQL critic whose value becomes the goal token (`goal: iql`)."""

from __future__ import annotations

import argparse

from dtd.cli import finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
    iql = subparsers.add_parser("iql", help="Implicit Q-Learning critic for the value goal")
    sub = iql.add_subparsers(dest="iql_command", metavar="SUBCOMMAND")
    iql.set_defaults(func=_no_subcommand)
    p = sub.add_parser("train", help="train IQL on a dataset (run folder like dtd train)",
                       description="Twin Q with Polyak targets, V by expectile regression, AWR actor. The run's "
                       "checkpoint is what `critic:` in a train config points at (with `goal: iql`).")
    p.add_argument("dataset", help="Minari id, Minari folder, D4RL .hdf5, DT .pkl or A+B")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=finite_float, default=3e-4)
    p.add_argument("--discount", type=finite_float, default=0.99)
    p.add_argument("--expectile", type=finite_float, default=0.7)
    p.add_argument("--temperature", type=finite_float, default=3.0, help="actor advantage temperature (beta)")
    p.add_argument("--tau", type=finite_float, default=0.005, help="Polyak rate of the target Q networks")
    p.add_argument("--hidden", type=int, help="model option: MLP width (default 256)")
    p.add_argument("--n-layers", type=int, help="model option: linear layers per network (default 3)")
    p.add_argument("--reward-scale", type=finite_float, default=1.0)
    p.add_argument("--reward-shift", type=finite_float, default=0.0, help="added to rewards (IQL AntMaze: -1)")
    p.add_argument("--log-every", type=int, default=200)
    p.add_argument("--ckpt-every", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default="runs")
    p.add_argument("--run-name", default="")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from dtd.config import IQLConfig
    from dtd.runs import load_critic
    from dtd.training.iql import train_iql

    options = {k: getattr(args, k) for k in ("hidden", "n_layers") if getattr(args, k) is not None}
    cfg = IQLConfig(**{k: getattr(args, k) for k in IQLConfig.__dataclass_fields__ if k != "model_options"},
                    model_options=options)
    run_dir = train_iql(cfg, force=args.force)
    critic = load_critic(run_dir)
    print(f"wrote {run_dir} (V over the dataset: large {critic.large:.4g}, small {critic.small:.4g}); "
          f"use it with: dtd train --goal iql --critic {run_dir}")
    return 0


def _no_subcommand(args: argparse.Namespace) -> int:
    from dtd.errors import DtdError

    raise DtdError("iql: choose a subcommand: train (see `dtd iql --help`)")
