"""The `dtd` command: a thin argparse layer over the Python API.

Each command group lives in its own module with ``register(subparsers)``; handlers import the
heavy libraries (torch, gymnasium) themselves so that ``dtd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from dtd.errors import DtdError

# module names under dtd.cli, in the order they appear in --help
COMMAND_MODULES = ["data", "train", "evaluate", "iql", "attention", "bench", "export", "sweep"]


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors look like every other error: one `dtd: error:` line, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        where = self.prog.removeprefix("dtd").strip()
        hint = f" (see `{self.prog} --help`)"
        print(f"dtd: error: {where + ': ' if where else ''}{message}{hint}", file=sys.stderr)
        raise SystemExit(2)


def finite_float(text: str) -> float:
    """argparse type: a float that is neither nan nor infinite."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dtd",
        description="Decision Transducer (UAI 2023) and baselines for offline RL.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"dtd.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # `dtd` alone runs the main job: train the default DTd on the embedded dataset.
    if not argv or argv == ["--debug"]:
        argv = argv + ["train"]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error (already printed as one line) or --help: the code, not an exit
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        return int(result or 0)
    except DtdError as exc:
        if args.debug:
            raise
        print(f"dtd: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions changed mid-run, ...: the OS's one-line reason
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"dtd: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError, OverflowError, TypeError, ValueError) as exc:  # sizes too large here
        from dtd.device import out_of_memory

        message = out_of_memory(exc)
        if message is None or args.debug:
            raise
        print(f"dtd: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dtd: interrupted", file=sys.stderr)
        return 130
