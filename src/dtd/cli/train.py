"""`dtd train`: train a model from a preset/YAML plus `--<field> VALUE` overrides, or resume a run.

`dtd train` alone (and `dtd`) is the main job: the default DTd on the embedded Hopper dataset,
evaluated in the simulator before and after training, with a table showing what was learned.
"""

from __future__ import annotations

import argparse


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help; the epilog (the model options per model) kept as written."""


def register(sub) -> None:
    from dtd.config import add_config_arguments, model_options_help

    p = sub.add_parser(
        "train",
        help="train a model (default: DTd on the embedded Hopper dataset, < 10 min on a 2-core CPU)",
        description="Train DTd / DT / BC. Fields come from the dataclass defaults (the main job), then --config "
                    "(a preset name from dtd/presets/ or a YAML path), then --<field> VALUE overrides. Under "
                    "torchrun every process trains with batch_size, so the effective batch is "
                    "batch_size x world size.",
        formatter_class=_HelpFormatter,
        epilog=model_options_help(),
    )
    p.add_argument("--config", metavar="PRESET_OR_PATH", help="preset name (see dtd/presets/README.md) or YAML file")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its last checkpoint (only --steps, --device, --threads, --max_minutes, "
                        "--eval_workers, --compile may change)")
    p.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (for logs and CI)", default=argparse.SUPPRESS)
    p.add_argument("--wandb", metavar="PROJECT", help="also log to this Weights & Biases project (pip install "
                   "'decision-transducer[wandb]'; WANDB_MODE=offline without a network); a resume continues its run")
    p.add_argument("--wandb_group", "--wandb-group", metavar="GROUP", help="the wandb group (dtd sweep: the sweep's name)")
    add_config_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dtd.errors import DtdError
    from dtd.config import load_config, overrides_from_args
    from dtd.training.trainer import resume, train

    overrides = overrides_from_args(args)
    tracker = _tracker(args)
    if args.resume:
        if args.config:
            raise DtdError("--resume continues the saved config; it cannot be combined with --config")
        result = resume(args.resume, overrides, progress=getattr(args, "progress", True), tracker=tracker)
    else:
        result = train(load_config(args.config, overrides), force=args.force, progress=getattr(args, "progress", True),
                       tracker=tracker)
    if not result.is_main:  # ranks > 0 under torchrun
        return 0
    print(f"run: {result.run_dir}  ({result.step} steps, {result.samples_per_s:.0f} samples/s)")
    if result.final is not None:
        print(format_comparison(result.final, result.untrained))
    return 0


def _tracker(args: argparse.Namespace):
    """Weights & Biases when asked for, or when the resumed run logs to it (the same wandb run continues)."""
    from dtd.training.tracking import Wandb, tracked

    if args.wandb or (args.resume and tracked(args.resume)):
        return Wandb(args.wandb, args.wandb_group)
    if args.wandb_group:
        from dtd.errors import DtdError

        raise DtdError("--wandb_group needs --wandb PROJECT")
    return None


def format_comparison(final: dict, untrained: dict | None) -> str:
    """A plain-text table: per target, the trained model's return and normalized score (mean ± std),
    next to the untrained model's when it was evaluated."""
    from dtd.training.trainer import eval_scores

    trained, before = eval_scores(final), eval_scores(untrained) if untrained else {}

    def cell(s: dict | None, key: str) -> str:
        if not s or f"{key}_mean" not in s:
            return "-"
        return f"{s[f'{key}_mean']:.1f} ± {s[f'{key}_std']:.1f}"

    header = ["target", "untrained return", "untrained score", "trained return", "trained score"]
    rows = [[t, cell(before.get(t), "return"), cell(before.get(t), "normalized"),
             cell(s, "return"), cell(s, "normalized")] for t, s in trained.items()]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    title = f"{final['env_id']}, {final['episodes']} episodes per target (score = D4RL normalized)"
    return "\n".join([title, line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
