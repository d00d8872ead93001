"""TrainConfig and IQLConfig: every hyperparameter of a training run, in typed dataclasses.

A run's config comes from three layers, later ones winning: the dataclass defaults (which are the
main job: the default DTd on the embedded dataset, sized for a 2-core CPU), a YAML preset or file
(``--config``), and ``--<field> VALUE`` command-line overrides. YAML presets may inherit with
``base: NAME`` or ``base: [NAME, ...]`` (merged left to right, then the file's own keys).

Fields are validated by type when read from YAML, so a typo or a wrong type is a DtdError naming the
file and the field instead of a crash mid-run. This module imports no torch (``dtd --help`` stays fast).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtd.errors import DtdError
from dtd.paths import check_run_name, write_text_atomic

PRESETS_DIR = Path(__file__).resolve().parent / "presets"  # package data: works from a pip install too
EMBEDDED_DATASET = "embedded:hopper"  # == dtd.data.loaders.EMBEDDED_DATASET (not imported: numpy-free here)


@dataclass
class TrainConfig:
    # --- data ---
    dataset: str = EMBEDDED_DATASET  # Minari id / folder / hdf5 / pickle / "A+B" / embedded:NAME
    download: bool = False  # let Minari fetch a dataset missing locally (needs a network)
    env_id: str = ""  # evaluation environment; empty = the dataset's own
    goal: str = "rtg"  # goal token: rtg (return-to-go) | maze (xy now + goal xy) | iql (critic value)
    critic: str = ""  # goal iql: a `dtd iql train` run folder or checkpoint
    waypoint: int = 3  # goal maze: the waypoint target is the xy this many steps ahead
    context_len: int = 20  # K, steps per window
    max_ep_len: int = 1000  # timestep embedding size; timesteps clipped to max_ep_len - 1
    reward_scale: float = 1000.0  # return-to-go divided by this
    pct_traj: float = 1.0  # keep the best trajectories covering this fraction of steps (%BC)
    delayed: bool = False  # move every trajectory's return to its last step
    # --- model (None = the model's own default; passed to dtd.models.build_model) ---
    model: str = "dtd"  # dtd | dt-small | dt-large | bc
    hidden_size: int | None = None
    n_layer: int | None = None
    n_head: int | None = None
    dropout: float | None = None
    bias: str | None = None  # DTd: b0 | left | right | all
    combiner: str | None = None  # DTd: c21 | c22 | c23
    norm_mode: str | None = None  # DTd: n0 | n1 | n2 | n3
    modality_emb: bool | None = None
    join_all: bool | None = None
    norm_joint: bool | None = None
    waypoint_head: bool | None = None  # DTd: predict the maze waypoint from the goal stream
    model_opts: list[str] = field(default_factory=list)  # any other model config field, as key=value
    # --- optimisation ---
    batch_size: int = 64  # per process; with torchrun the effective batch is batch_size x world size
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    steps: int = 1500  # total optimiser steps
    max_minutes: float = 5.0  # also stop training after this much training time (0 = off; not reproducible)
    grad_clip: float = 0.25  # gradient norm clip; 0 = off
    waypoint_weight: float = 1.0  # weight of the waypoint loss when the model predicts waypoints
    # --- logging, evaluation, checkpoints (intervals in steps; 0 = never, except at the end) ---
    log_every: int = 50
    eval_every: int = 0
    ckpt_every: int = 500
    eval_episodes: int = 5
    eval_targets: list[float] = field(default_factory=list)  # empty = the task's targets from the spec
    eval_max_steps: int = 0  # cap on episode length at evaluation; 0 = max_ep_len
    eval_untrained: bool = True  # evaluate the freshly initialised model too (step 0)
    probe_steps: list[int] = field(default_factory=list)  # log the shuffled-input probe at these steps
    eval_workers: int = 1  # CPU processes sharing the episodes (forked; same returns; see BENCHMARKS.md)
    # --- run ---
    seed: int = 0
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = torch's default (1 is much faster on a busy shared CPU)
    bf16: bool = False  # bf16 autocast in forward passes (meant for GPUs)
    out_dir: str = "runs"
    run_name: str = ""  # empty = <preset or model>-<dataset>-s<seed>-<timestamp>
    preset: str = ""  # the preset this config came from (set by --config; used by dtd report)

    def model_overrides(self) -> dict[str, Any]:
        """The model switches that were set (and model_opts), as build_model keyword arguments."""
        out: dict[str, Any] = {k: getattr(self, k) for k in MODEL_FIELDS if getattr(self, k) is not None}
        for opt in self.model_opts:
            key, sep, value = opt.partition("=")
            if not sep or not key.strip():
                raise DtdError(f"model_opts: expected key=value, got {opt!r}")
            out[key.strip()] = value.strip()  # build_model parses the string to the field's type
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_ranges(self) -> None:
        """A value out of range is one DtdError before any work starts (a typed field can still be -1 or nan).

        Every float must be finite (inf passes a "> 0" test but trains nothing)."""
        for name, (rule, ok) in RANGES.items():
            value = getattr(self, name)
            if value is not None and not ok(value):
                raise DtdError(f"--{name} must be {rule}, got {value}")
        for name in FLOAT_FIELDS:
            value = getattr(self, name)
            values = value if isinstance(value, list) else [value]
            if not all(v is None or math.isfinite(v) for v in values):
                raise DtdError(f"--{name} must be finite, got {value}")
        if any(s < 1 for s in self.probe_steps):
            raise DtdError(f"--probe_steps must be steps >= 1, got {self.probe_steps}")
        if self.run_name:
            check_run_name(self.run_name)


@dataclass
class IQLConfig:
    dataset: str
    steps: int = 20000
    batch_size: int = 256
    lr: float = 3e-4
    discount: float = 0.99
    expectile: float = 0.7
    temperature: float = 3.0  # actor's advantage temperature (beta)
    tau: float = 0.005  # Polyak rate of the target Qs
    hidden: int = 256
    n_layers: int = 3
    reward_scale: float = 1.0  # r' = reward_scale * r + reward_shift (IQL uses r - 1 on AntMaze)
    reward_shift: float = 0.0
    log_every: int = 200
    ckpt_every: int = 5000
    seed: int = 0
    device: str = "cpu"
    out_dir: str = "runs"
    run_name: str = ""


def check_iql_config(cfg: IQLConfig) -> None:
    """Every IQL setting in range (floats finite) before any work: one DtdError naming the flag."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise DtdError(f"iql: --{f.name.replace('_', '-')} must be finite, got {value}")
    for name in ("discount", "expectile"):
        if not 0.0 < getattr(cfg, name) < 1.0:
            raise DtdError(f"iql: --{name} must be in (0, 1), got {getattr(cfg, name)}")
    if not 0.0 < cfg.tau <= 1.0:
        raise DtdError(f"iql: --tau must be in (0, 1], got {cfg.tau}")
    if cfg.lr <= 0 or cfg.temperature < 0:
        raise DtdError(f"iql: --lr must be > 0 and --temperature >= 0, got {cfg.lr} and {cfg.temperature}")
    for name in ("steps", "batch_size", "hidden", "n_layers"):
        if getattr(cfg, name) < 1:
            raise DtdError(f"iql: --{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    for name in ("log_every", "ckpt_every", "seed"):
        if getattr(cfg, name) < 0:
            raise DtdError(f"iql: --{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    if cfg.run_name:
        check_run_name(cfg.run_name, "--run-name")


# Allowed values of the numeric fields: (as the error says it, test). nan fails every test.
_GE0, _GE1, _GT0 = (">= 0", lambda v: v >= 0), (">= 1", lambda v: v >= 1), ("> 0", lambda v: v > 0)
RANGES = {"context_len": _GE1, "max_ep_len": _GE1, "reward_scale": _GT0, "waypoint": _GE1,
          "pct_traj": ("in (0, 1]", lambda v: 0 < v <= 1), "dropout": ("in [0, 1)", lambda v: 0 <= v < 1),
          "hidden_size": _GE1, "n_layer": _GE1, "n_head": _GE1, "batch_size": _GE1, "lr": _GT0, "weight_decay": _GE0,
          "warmup_steps": _GE0, "steps": _GE1, "max_minutes": _GE0, "grad_clip": _GE0, "waypoint_weight": _GE0,
          "log_every": _GE0, "eval_every": _GE0, "ckpt_every": _GE0, "eval_episodes": _GE0, "eval_max_steps": _GE0,
          "eval_workers": _GE1, "threads": _GE0, "seed": _GE0}


MODEL_FIELDS = ("hidden_size", "n_layer", "n_head", "dropout", "bias", "combiner", "norm_mode",
                "modality_emb", "join_all", "norm_joint", "waypoint_head")
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


def _is_float_field(name: str) -> bool:
    base, _ = _unwrap_optional(_HINTS[name])
    return base is float or (typing.get_origin(base) is list and typing.get_args(base)[0] is float)


# ---- typed values -----------------------------------------------------------------------------


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """int | None -> (int, True); int -> (int, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    if typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        name = "list of numbers" if item is float else f"list of {item.__name__}"
    else:
        name = base.__name__
    return f"{name} or null" if optional else name


def check_value(name: str, value: Any) -> Any:
    """Validate (and lightly coerce: int -> float) a YAML value for field `name`; ValueError if wrong."""
    base, optional = _unwrap_optional(_HINTS[name])
    if value is None:
        if optional:
            return None
    elif typing.get_origin(base) is list:
        item = typing.get_args(base)[0]
        value = value if isinstance(value, list) else [value]
        try:
            return [check_item(item, v) for v in value]
        except ValueError:
            pass
    else:
        try:
            return check_item(base, value)
        except ValueError:
            pass
    raise ValueError(f"expects {_type_name(_HINTS[name])}, got {value!r}")


def check_item(tp: type, value: Any) -> Any:
    """A scalar YAML value of type tp (bool, int, float, str); ints are accepted as floats, bools never as numbers."""
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise ValueError


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def parse_bool(text: str) -> bool:
    """The one bool spelling dtd accepts on the command line and in model options; ValueError otherwise."""
    try:
        return _BOOLS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"not a bool: {text!r}") from None


def parse_text(name: str, text: str) -> Any:
    """A command-line string -> the typed value of field `name` (argparse `type=`)."""
    base, optional = _unwrap_optional(_HINTS[name])
    if optional and text.lower() in ("none", "null", "default"):
        return None
    try:
        if base is bool:
            return parse_bool(text)
        item = typing.get_args(base)[0] if typing.get_origin(base) is list else base
        value = item(text)  # a list field gets one element here; argparse collects the list (nargs="*")
        if item is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"--{name} must be a finite number, got {text!r}")
        return value
    except ValueError:
        raise argparse.ArgumentTypeError(f"--{name} expects {_type_name(_HINTS[name])}, got {text!r}") from None


FLOAT_FIELDS = tuple(name for name in FIELDS if _is_float_field(name))


# ---- YAML presets -----------------------------------------------------------------------------


def resolve_preset(name_or_path: str) -> Path:
    """A preset name (./configs/NAME.yaml or the packaged dtd/presets/NAME.yaml, e.g. 'hopper-medium-dtd' or 'ablation/hopper-medium-replay-c21')
    or a YAML path -> the file."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    for root in (Path.cwd() / "configs", PRESETS_DIR):
        candidate = root / f"{name_or_path.removesuffix('.yaml')}.yaml"
        if candidate.is_file():
            return candidate
    raise DtdError(f"--config {name_or_path}: no such file, and no preset of that name in {PRESETS_DIR} "
                   "(see dtd/presets/README.md)")


def preset_name(path: Path) -> str:
    """presets/ablation/x.yaml -> 'ablation/x'; a file elsewhere -> its stem."""
    try:
        return path.resolve().relative_to(PRESETS_DIR).with_suffix("").as_posix()
    except ValueError:
        return path.stem


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config with its `base:` chain merged in, every field checked; DtdError names file and field."""
    import yaml

    path = path.resolve()
    if path in _seen:
        raise DtdError(f"{path}: circular 'base:' chain")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DtdError(f"{path}: cannot read the YAML config ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise DtdError(f"{path}: a config must be a mapping of field: value, got {type(data).__name__}")
    bases = data.pop("base", None) or []
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
        base_path = path.parent / f"{base}.yaml" if (path.parent / f"{base}.yaml").is_file() else resolve_preset(base)
        merged.update(read_yaml(base_path, _seen + (path,)))
    merged.update(checked_fields(data, f"{path}: unknown field '{{}}' (see `dtd train --help`)",
                                 f"{path}: field '{{}}' {{}}"))
    return merged


def load_config(config: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- YAML preset/file `config` <- `overrides` (already typed, e.g. from argparse)."""
    values: dict[str, Any] = {}
    if config:
        path = resolve_preset(config)
        values.update(read_yaml(path))
        values.setdefault("preset", preset_name(path))
    values.update(checked_fields(overrides or {}, "config: unknown field '{}'", "--{} {}"))
    return TrainConfig(**values)


def config_from_dict(data: dict[str, Any], source: str) -> TrainConfig:
    """A saved config (config.yaml / checkpoint) -> TrainConfig; unknown or mistyped fields are DtdErrors."""
    return TrainConfig(**checked_fields(data, f"{source}: unknown field '{{}}'", f"{source}: field '{{}}' {{}}"))


def checked_fields(values: dict[str, Any], unknown: str, wrong: str) -> dict[str, Any]:
    """TrainConfig field values checked by type (the one check for YAML, overrides and saved configs);
    `unknown`.format(key) and `wrong`.format(key, reason) are the DtdError messages."""
    out = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise DtdError(unknown.format(key))
        try:
            out[key] = check_value(key, value)
        except ValueError as exc:
            raise DtdError(wrong.format(key, exc)) from None
    return out


def save_yaml(cfg: TrainConfig | IQLConfig, path: Path) -> None:
    """Write a run's full config (either trainer's) atomically: a run folder's config.yaml."""
    import yaml

    write_text_atomic(path, yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


# ---- argparse ---------------------------------------------------------------------------------


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--<field>` option per TrainConfig field (also spelled with dashes), typed, default in help.

    Defaults are SUPPRESSed so that only the fields given on the command line override the YAML.
    """
    group = parser.add_argument_group("config fields (override the preset; defaults = the main job)")
    for name, f in FIELDS.items():
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        base, _ = _unwrap_optional(_HINTS[name])
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        kwargs: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS,
                                      type=lambda text, n=name: parse_text(n, text),
                                      help=f"{_type_name(_HINTS[name])} (default: {default!r})")
        if typing.get_origin(base) is list:
            kwargs.update(nargs="*", metavar="X")
        elif base is bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        else:
            kwargs.update(metavar=base.__name__.upper())
        group.add_argument(*flags, **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line."""
    return {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
