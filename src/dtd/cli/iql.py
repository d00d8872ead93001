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
    _add_config_arguments(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.set_defaults(func=cmd_train)


def _add_config_arguments(p: argparse.ArgumentParser) -> None:
    """One option per IQLConfig field (dashes for underscores), its help the field's comment: the defaults and
    their meaning are written once, in the dataclass. The model options come from IQLNetConfig."""
    import dataclasses

    from dtd.config import IQLConfig, field_notes, help_text
    from dtd.model_configs import IQLNetConfig

    notes = field_notes(IQLConfig)
    p.add_argument("dataset", help=notes.get("dataset"))
    for f in dataclasses.fields(IQLConfig):
        if f.name in ("dataset", "model_options"):
            continue
        kind = finite_float if isinstance(f.default, float) else type(f.default)
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=f.default,
                       help=help_text(notes.get(f.name), f"default: {f.default!r}"))
    net, defaults = field_notes(IQLNetConfig), {f.name: f.default for f in dataclasses.fields(IQLNetConfig)}
    for name in ("hidden", "n_layers"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int,
                       help=help_text(f"model option: {net.get(name, name)}", f"default: {defaults[name]}"))


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
