"""TrainConfig and IQLConfig: every hyperparameter of a training run, in typed dataclasses.

A run's config comes from three layers, later ones winning: the dataclass defaults (which are the
main job: the default DTd on the embedded dataset, sized for a 2-core CPU), a YAML preset or file
(``--config``), and ``--<field> VALUE`` command-line overrides. YAML presets may inherit with
``base: NAME`` or ``base: [NAME, ...]`` (merged left to right, then the file's own keys).

The model's options are one nested mapping under the model (``model_options: {bias: right}``), merged
key by key across the layers and checked, once the model is known, against that model's config
dataclass (``dtd.model_configs``): an unknown option is one DtdError naming the model and listing its
options. ``--bias right``, ``--hidden_size 64``, ``--model_opts key=value ...`` and the old top-level
YAML keys (``bias: all``, ``model_opts: [...]``, as old presets and run folders' config.yaml wrote them)
are spellings that write into that mapping.

Fields are validated by type when read from YAML, so a typo or a wrong type is a DtdError naming the
file and the field instead of a crash mid-run. This module imports no torch (``dtd --help`` stays fast).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import io
import math
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtd.errors import DtdError
from dtd.model_configs import CONFIGS, DATA_FIELDS, IQLNetConfig
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
    # --- model: its name and its options (fields of its config class in dtd.model_configs; an option
    # not set takes the model's default). Checked against the model in __post_init__.
    model: str = "dtd"  # dtd | dt-small | dt-large | bc
    model_options: dict[str, Any] = field(default_factory=dict)  # e.g. {bias: right, combiner: c23}
    # --- optimisation ---
    batch_size: int = 64  # per process; with torchrun the effective batch is batch_size x world size
    lr: float = 1e-3  # peak learning rate of AdamW (linear warm-up, then the paper's slow decay)
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 100  # steps of linear learning-rate warm-up
    steps: int = 1500  # total optimiser steps
    max_minutes: float = 5.0  # also stop training after this much training time (0 = off; not reproducible)
    grad_clip: float = 0.25  # gradient norm clip; 0 = off
    waypoint_weight: float = 1.0  # weight of the waypoint loss when the model predicts waypoints
    # --- logging, evaluation, checkpoints (intervals in steps; 0 = never, except at the end) ---
    log_every: int = 50  # steps between metrics.jsonl / TensorBoard lines
    eval_every: int = 0  # steps between evaluations in the simulator (0: only at the end)
    ckpt_every: int = 500  # steps between checkpoints kept as step_N.pt (last.pt is always the newest)
    eval_episodes: int = 5  # episodes per evaluation target (0: no evaluation)
    eval_targets: list[float] = field(default_factory=list)  # empty = the task's targets from the spec
    eval_max_steps: int = 0  # cap on episode length at evaluation; 0 = max_ep_len
    eval_untrained: bool = True  # evaluate the freshly initialised model too (step 0)
    probe_steps: list[int] = field(default_factory=list)  # log the shuffled-input probe at these steps
    eval_workers: int = 1  # CPU processes sharing the episodes (forked; same returns; see BENCHMARKS.md)
    # --- run ---
    seed: int = 0  # seeds torch, numpy and the batch sampler
    device: str = "auto"  # auto (cuda when present) | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 = torch's default (1 is much faster on a busy shared CPU)
    bf16: bool = False  # bf16 autocast in forward passes (meant for GPUs)
    compile: str = "off"  # off | default | cudagraphs: torch.compile the training forward, for GPUs (COMPILE_MODES)
    out_dir: str = "runs"  # the run folder is out_dir/run_name
    run_name: str = ""  # empty = <preset or model>-<dataset>-s<seed>-<timestamp>
    preset: str = ""  # the preset this config came from (set by --config; used by dtd report)

    def __post_init__(self) -> None:
        self.model_options = check_model_options(self.model, self.model_options)

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
        check_goal_targets(self.eval_targets, self.reward_scale, "--eval_targets")
        if any(s < 1 for s in self.probe_steps):
            raise DtdError(f"--probe_steps must be steps >= 1, got {self.probe_steps}")
        if self.compile not in COMPILE_MODES:
            raise DtdError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.run_name:
            check_run_name(self.run_name)


@dataclass
class IQLConfig:
    dataset: str  # Minari id, Minari folder, D4RL .hdf5, DT .pkl or A+B
    steps: int = 20000  # gradient steps (critics, value and actor together)
    batch_size: int = 256  # transitions per step
    lr: float = 3e-4  # Adam learning rate of every network
    discount: float = 0.99  # discount of the TD targets
    expectile: float = 0.7  # the value net's expectile of Q (0.5 = mean; higher = closer to max)
    temperature: float = 3.0  # actor's advantage temperature (beta)
    tau: float = 0.005  # Polyak rate of the target Qs
    model_options: dict[str, Any] = field(default_factory=dict)  # IQLNetConfig's: hidden (256), n_layers (3)
    reward_scale: float = 1.0  # r' = reward_scale * r + reward_shift (IQL uses r - 1 on AntMaze)
    reward_shift: float = 0.0  # added to the scaled rewards (IQL AntMaze: -1)
    log_every: int = 200  # steps between metrics.jsonl / TensorBoard lines
    ckpt_every: int = 5000  # steps between checkpoints
    seed: int = 0  # seeds torch, numpy and the batch sampler
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    out_dir: str = "runs"  # the run folder is out_dir/run_name
    run_name: str = ""  # empty = iql-<dataset>-s<seed>-<timestamp>

    def __post_init__(self) -> None:
        self.model_options = check_options("iql", IQLNetConfig, self.model_options)


def iql_config_from_dict(data: dict[str, Any], source: str) -> IQLConfig:
    """A saved IQL config (config.yaml / checkpoint) -> IQLConfig; the top-level `hidden` and `n_layers`
    of runs saved before model_options go into the mapping."""
    data = dict(data)
    nested = dict(data.pop("model_options", None) or {})
    nested.update({key: data.pop(key) for key in ("hidden", "n_layers") if key in data})
    try:
        return IQLConfig(**data, model_options=nested)
    except (TypeError, DtdError) as exc:
        raise DtdError(f"{source}: {exc}") from None


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
    sizes = {"steps": cfg.steps, "batch_size": cfg.batch_size, **cfg.model_options}  # model options: hidden, n_layers
    for name, value in sizes.items():
        if value < 1:
            raise DtdError(f"iql: --{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("log_every", "ckpt_every"):
        if getattr(cfg, name) < 0:
            raise DtdError(f"iql: --{name.replace('_', '-')} must be >= 0, got {getattr(cfg, name)}")
    check_seed(cfg.seed, "iql: --seed")
    if cfg.run_name:
        check_run_name(cfg.run_name, "--run-name")


# Allowed values of the numeric fields: (as the error says it, test). nan fails every test.
_GE0, _GE1, _GT0 = (">= 0", lambda v: v >= 0), (">= 1", lambda v: v >= 1), ("> 0", lambda v: v > 0)
# numpy seeds its generators with 32-bit seeds (np.random.seed); every command's --seed has this range
SEED_RANGE = (">= 0 and < 2**32", lambda v: 0 <= v < 2**32)
FLOAT32_MAX = 3.4028234663852886e38  # goal tokens are float32: a larger scaled target is inf


def check_seed(seed: int, flag: str = "--seed") -> int:
    """A seed every generator dtd seeds accepts; one DtdError otherwise."""
    rule, ok = SEED_RANGE
    if not ok(seed):
        raise DtdError(f"{flag} must be {rule}, got {seed}")
    return seed


def check_goal_targets(targets: Any, scale: float, what: str) -> None:
    """Target returns a return-to-go goal can hold: finite, and target / scale a finite float32 (1e300 is
    finite as a float64 but its goal token is inf, and the model's actions NaN)."""
    for target in targets:
        if not math.isfinite(target) or abs(target / scale) > FLOAT32_MAX:
            raise DtdError(f"{what}: target return {target:g} is not finite at reward scale {scale:g} (its goal token "
                           f"target / scale must be a finite float32)")


RANGES = {"context_len": _GE1, "max_ep_len": _GE1, "reward_scale": _GT0, "waypoint": _GE1,
          "pct_traj": ("in (0, 1]", lambda v: 0 < v <= 1), "batch_size": _GE1, "lr": _GT0, "weight_decay": _GE0,
          "warmup_steps": _GE0, "steps": _GE1, "max_minutes": _GE0, "grad_clip": _GE0, "waypoint_weight": _GE0,
          "log_every": _GE0, "eval_every": _GE0, "ckpt_every": _GE0, "eval_episodes": _GE0, "eval_max_steps": _GE0,
          "eval_workers": _GE1, "threads": _GE0, "seed": SEED_RANGE}

# --compile -> torch.compile's mode (None: eager). "cudagraphs" is its "reduce-overhead" mode, which replays the
# step as CUDA graphs: on a GPU the eager step is bound by kernel launches, and this gave DTd 3.3-3.8x the
# samples/s on an H200 (BENCHMARKS.md). On a CPU compile was measured slower than eager: leave it off there.
COMPILE_MODES: dict[str, str | None] = {"off": None, "default": "default", "cudagraphs": "reduce-overhead"}

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


@functools.cache
def field_notes(cls: type) -> dict[str, str]:
    """Each field's trailing ``# comment`` in the dataclass's source, which is where its meaning is written once;
    ``--help`` shows it. {} when the source cannot be read (then the help shows types and defaults only)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, tokenize.TokenError, SyntaxError):
        return {}
    fields, rows = {f.name for f in dataclasses.fields(cls)}, {}
    for tok in tokens:
        rows.setdefault(tok.start[0], []).append(tok)
    notes = {}
    for row in rows.values():
        row = [t for t in row if t.type not in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE, tokenize.NL)]
        if len(row) > 2 and row[0].string in fields and row[1].string == ":" and row[-1].type == tokenize.COMMENT:
            notes[row[0].string] = row[-1].string.lstrip("#").strip()
    return notes


def _option_note(name: str, models: list[str]) -> str | None:
    """A model option's notes, each with the model it comes from ('dtd: encoder heads'), the same note once."""
    notes: dict[str, list[str]] = {}
    for model in models:
        note = field_notes(CONFIGS[model][0]).get(name)
        if note:
            notes.setdefault(note, []).append(model)
    return "; ".join(f"{'/'.join(ms)}: {note}" for note, ms in notes.items()) or None


def help_text(note: str | None, rest: str) -> str:
    """An option's help: its field note, then the type and default in brackets (% escaped for argparse)."""
    text = f"{note} ({rest})" if note else rest
    return text.replace("%", "%%")  # argparse formats help with %


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
    return check_typed(_HINTS[name], value)


def check_typed(hint: Any, value: Any) -> Any:
    """The one field checker: a YAML (typed) value of type `hint` (scalar, optional, list); ValueError if wrong."""
    base, optional = _unwrap_optional(hint)
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
    raise ValueError(f"expects {_type_name(hint)}, got {value!r}")


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


def parse_item(tp: type, text: str) -> Any:
    """The one text parser: a command-line string -> a scalar of type tp (bool, int, float, str); ValueError if not."""
    return parse_bool(text) if tp is bool else tp(text)


def parse_text(name: str, text: str) -> Any:
    """A command-line string -> the typed value of field `name` (argparse `type=`)."""
    return _parse_flag(f"--{name}", _HINTS[name], text)


def _parse_flag(flag: str, hint: Any, text: str) -> Any:
    base, optional = _unwrap_optional(hint)
    if optional and text.lower() in ("none", "null", "default"):
        return None
    item = typing.get_args(base)[0] if typing.get_origin(base) is list else base
    try:
        value = parse_item(item, text)  # a list field gets one element here; argparse collects the list (nargs="*")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{flag} expects {_type_name(hint)}, got {text!r}") from None
    if item is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{flag} must be a finite number, got {text!r}")
    return value


# ---- model options ----------------------------------------------------------------------------


class OptionText(str):
    """A model option's value as command-line text (`--model_opts key=value`, a string given to
    build_model): parsed by parse_item to the option's type once the model is known. YAML values are
    typed already and are checked as they are."""


# Command-line spellings of model options (also the top-level YAML keys of presets and run folders'
# config.yaml written before model_options): `--bias right` == `--model_opts bias=right`. Their types
# are the config classes' (the same in every model that has the option).
MODEL_FLAGS = ("hidden_size", "n_layer", "n_head", "dropout", "bias", "combiner", "norm_mode",
               "modality_emb", "join_all", "norm_joint", "waypoint_head")


@functools.cache
def option_types(config_cls: type) -> dict[str, Any]:
    """The options of a model config dataclass (its fields but the data's), name -> type."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls) if f.name not in DATA_FIELDS}


def check_model_options(model: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` checked against model `model`'s config class: known keys, typed values (None = the
    model's default, dropped), the class's own checks (choices); one DtdError naming the model otherwise."""
    if model not in CONFIGS:
        raise DtdError(f"model: unknown model {model!r} (choose from {', '.join(CONFIGS)})")
    config_cls, preset = CONFIGS[model]
    return check_options(model, config_cls, options, preset)


def check_options(model: str, config_cls: type, options: Any, preset: dict | None = None) -> dict[str, Any]:
    """check_model_options for any model config class (IQL's too)."""
    if not isinstance(options, dict):
        raise DtdError(f"model {model}: model_options must be a mapping of option: value, got {options!r}")
    known = option_types(config_cls)
    options = {k: v for k, v in options.items() if v is not None}  # None: unset (old config.yaml writes them all)
    unknown = [str(k) for k in options if k not in known]
    if unknown:
        raise DtdError(f"model {model}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                       f"(known: {', '.join(known)})")
    out = {}
    for key, value in options.items():
        try:
            out[key] = (parse_item(known[key], value) if isinstance(value, OptionText)
                        else check_typed(known[key], value))
        except ValueError:
            raise DtdError(f"model {model}: option {key} expects {_type_name(known[key])}, "
                           f"got {str(value)!r}") from None
        if isinstance(out[key], str):
            out[key] = str(out[key])  # plain str, not OptionText
    config_cls(state_dim=1, act_dim=1, **{**(preset or {}), **out})  # the class's own checks (choices), at read time
    return out


def nest_model_options(values: dict[str, Any], wrong: str) -> dict[str, Any]:
    """The other spellings of model options -> values["model_options"] (a mapping; later spellings win):
    top-level MODEL_FLAGS keys (`bias: all`) and `model_opts: [key=value, ...]`, as command-line
    overrides, old presets and old run folders' config.yaml give them. `wrong`.format(field, reason)
    is the DtdError message."""
    values = dict(values)
    if "model_options" not in values and "model_opts" not in values and not any(k in values for k in MODEL_FLAGS):
        return values
    nested = values.pop("model_options", None)
    if nested is None:
        nested = {}
    if not isinstance(nested, dict):
        raise DtdError(wrong.format("model_options", f"expects a mapping of option: value, got {nested!r}"))
    given = {key: f"model_options {key}: {value}" for key, value in nested.items() if value is not None}
    spelled = [(key, f"{key} {values[key]}", values.pop(key)) for key in MODEL_FLAGS if key in values]
    opts = values.pop("model_opts", None) or []
    for opt in opts if isinstance(opts, list) else [opts]:
        key, sep, value = str(opt).partition("=")
        if not sep or not key.strip():
            raise DtdError(wrong.format("model_opts", f"expects key=value items, got {opt!r}"))
        spelled.append((key.strip(), f"model_opts {opt}", OptionText(value.strip())))
    nested = dict(nested)
    for key, text, value in spelled:  # one layer sets an option once: two spellings are a conflict
        if value is not None and key in given:
            raise DtdError(wrong.format(key, f"is set twice ({given[key]} and {text}); set it once"))
        if value is not None:
            given[key] = text
        nested[key] = value
    values["model_options"] = nested
    return values


def _merge(into: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """A later config layer over an earlier one; model_options merge key by key (None: back to the default)."""
    for key, value in layer.items():
        into[key] = {**into.get(key, {}), **value} if key == "model_options" else value
    return into


def _flag_type(name: str) -> Any:
    """The type of model option `name` (MODEL_FLAGS), from the config classes."""
    found = {option_types(cls)[name] for cls, _ in CONFIGS.values() if name in option_types(cls)}
    assert len(found) == 1, (name, found)  # one type per spelling
    return found.pop()


def model_options_help() -> str:
    """The model options per model, from the config classes (`dtd train --help`)."""
    lines = [textwrap.fill("model options (YAML: `model_options: {KEY: VALUE}` under `model:`; command line: "
                           "--model_opts KEY=VALUE ..., or the shortcuts --" + ", --".join(MODEL_FLAGS[:3]) + ", ...; "
                           "unset options take the model's default, shown here):", 110, break_on_hyphens=False)]
    for name, (config_cls, preset) in CONFIGS.items():
        defaults = {**{f.name: f.default for f in dataclasses.fields(config_cls)}, **preset}
        text = " ".join(f"{key}={defaults[key]}" for key in option_types(config_cls))
        lines.append(textwrap.fill(text, 110, initial_indent=f"  {name}: ", subsequent_indent=" " * 6,
                                   break_on_hyphens=False))
    return "\n".join(lines)


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
    if path.exists():  # a folder, a FIFO: say so, not "no such file"
        kind = "a folder" if path.is_dir() else "not a regular file"
        raise DtdError(f"--config {name_or_path}: is {kind}; give a YAML file or a preset name")
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

    loader = _unique_key_loader()
    path = path.resolve()
    if path in _seen:
        raise DtdError(f"{path}: circular 'base:' chain")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}
    except UnicodeDecodeError:
        raise DtdError(f"{path}: not a YAML config (not UTF-8 text)") from None
    except OSError as exc:
        raise DtdError(f"{path}: cannot read the YAML config ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:  # one line: the problem and where, without PyYAML's multi-line excerpt
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise DtdError(f"{path}: cannot read the YAML config ({where}{problem})") from None
    if not isinstance(data, dict):
        raise DtdError(f"{path}: a config must be a mapping of field: value, got {type(data).__name__}")
    bases = data.pop("base", None) or []
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b.strip() for b in bases):
        raise DtdError(f"{path}: 'base:' expects a preset name or a list of preset names, got {bases!r}")
    merged: dict[str, Any] = {}
    for base in bases:
        base_path = path.parent / f"{base}.yaml" if (path.parent / f"{base}.yaml").is_file() else resolve_preset(base)
        _merge(merged, read_yaml(base_path, _seen + (path,)))
    return _merge(merged, checked_fields(data, f"{path}: unknown field '{{}}' (see `dtd train --help`)",
                                         f"{path}: field '{{}}' {{}}"))


@functools.cache
def _unique_key_loader() -> type:
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} appears twice (line {seen[key].start_mark.line + 1} and line "
                        f"{key_node.start_mark.line + 1}); give it once", key_node.start_mark)
                seen[key] = key_node
            return super().construct_mapping(node, deep)

    return Loader


def load_config(config: str | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- YAML preset/file `config` <- `overrides` (already typed, e.g. from argparse); the
    model options of all layers merged key by key, then checked against the model the config ends with."""
    values: dict[str, Any] = {}
    if config:
        path = resolve_preset(config)
        _merge(values, read_yaml(path))
        values.setdefault("preset", preset_name(path))
    _merge(values, checked_fields(overrides or {}, "config: unknown field '{}'", "--{} {}"))
    return TrainConfig(**values)


def config_from_dict(data: dict[str, Any], source: str) -> TrainConfig:
    """A saved config (config.yaml / checkpoint) -> TrainConfig; unknown or mistyped fields are DtdErrors.
    Old runs' top-level model keys and model_opts list load into model_options (nest_model_options)."""
    values = checked_fields(data, f"{source}: unknown field '{{}}'", f"{source}: field '{{}}' {{}}")
    try:
        return TrainConfig(**values)
    except DtdError as exc:
        raise DtdError(f"{source}: {exc}") from None


def checked_fields(values: dict[str, Any], unknown: str, wrong: str) -> dict[str, Any]:
    """TrainConfig field values checked by type (the one check for YAML, overrides and saved configs), the
    model options' other spellings nested (their values are typed against the model by TrainConfig);
    `unknown`.format(key) and `wrong`.format(key, reason) are the DtdError messages."""
    out = {}
    for key, value in nest_model_options(values, wrong).items():
        if key not in FIELDS:
            raise DtdError(unknown.format(key))
        if key == "model_options":
            out[key] = value
            continue
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
    notes = field_notes(TrainConfig)
    for name, f in FIELDS.items():
        if name == "model_options":  # on the command line: the model option flags below
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        base, _ = _unwrap_optional(_HINTS[name])
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        kwargs: dict[str, Any] = dict(dest=name, default=argparse.SUPPRESS,
                                      type=lambda text, n=name: parse_text(n, text),
                                      help=help_text(notes.get(name),
                                                     f"{_type_name(_HINTS[name])}, default: {default!r}"))
        if typing.get_origin(base) is list:
            kwargs.update(nargs="*", metavar="X")
        elif base is bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        else:
            kwargs.update(metavar=base.__name__.upper())
        group.add_argument(*flags, **kwargs)
    models = parser.add_argument_group("model options (write into model_options; checked against --model)")
    models.add_argument("--model_opts", "--model-opts", dest="model_opts", nargs="*", metavar="KEY=VALUE",
                        default=argparse.SUPPRESS, help="any option of the model (listed at the end)")
    for name in MODEL_FLAGS:
        hint = typing.Optional[_flag_type(name)]
        owners = [m for m, (cls, _) in CONFIGS.items() if name in option_types(cls)]
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        kwargs = dict(dest=f"model_options.{name}", default=argparse.SUPPRESS,
                      type=lambda text, n=name, h=hint: _parse_flag(f"--{n}", h, text),
                      help=help_text(_option_note(name, owners), f"{_type_name(hint)}: model_options.{name} of "
                                                                     f"{', '.join(owners)}; default: the model's"))
        if _flag_type(name) is bool:
            kwargs.update(nargs="?", const=True, metavar="BOOL")
        else:
            kwargs.update(metavar=_flag_type(name).__name__.upper())
        models.add_argument(*flags, **kwargs)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line; the model option flags and --model_opts as model_options."""
    out = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    flat = {name: getattr(args, f"model_options.{name}") for name in MODEL_FLAGS
            if hasattr(args, f"model_options.{name}")}
    if hasattr(args, "model_opts"):
        flat["model_opts"] = args.model_opts
    return nest_model_options({**out, **flat}, "--{} {}")
