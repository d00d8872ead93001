"""A sweep spec (YAML): configs x named overrides x seeds, plus optional named steps.

    name: my-grid                       # default: the file's stem; names the folders and the wandb group
    configs: [hopper-medium-dtd, cpu/hopper-medium-dt-small]   # presets or YAML paths (relative to the spec)
    overrides:                          # optional named cells, each a set of `dtd train` fields
      lr1e-3: {lr: 0.001}
      small: {model_options: {hidden_size: 64}}
    fields: {steps: 4000, eval_every: 500}   # optional: every job's fields (before the cell's)
    seeds: [0, 1, 2]
    runs: runs/my-grid                  # run folders with checkpoints (default runs/<name>)
    records: results/my-grid            # one small record per finished job (default results/<name>)
    resources: {num_cpus: 1, num_gpus: 0}    # per train job (threads; Ray's scheduling)
    steps:                              # optional: Python callables run after the jobs they need
      summary: {call: "my_package.analysis:summarize", needs: all, kwargs: {}}
    wandb: my-project                   # optional: log every run to Weights & Biases, one group per sweep

Job names are `<config>[-<cell>]-s<seed>`; every job's fields are checked (like `dtd train` would) on load."""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtd.config import add_config_arguments, load_config, overrides_from_args
from dtd.errors import DtdError
from dtd.sweep.local import Where
from dtd.sweep.record import Job

KEYS = {"name", "configs", "overrides", "fields", "seeds", "runs", "records", "resources", "steps", "wandb"}


@dataclass
class Sweep:
    name: str
    jobs: list[Job]
    where: Where
    wandb: dict[str, str] | None = None  # {"project": ..., "group": ...}
    source: Path | None = None


@dataclass
class StepRef:
    """A named step's "module:function", imported where the step runs (a Ray worker too): function(runs, out)
    writes its files into `out` and returns the command lines it stands for."""
    call: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, runs: Path, out: Path) -> list[str]:
        module, _, name = self.call.partition(":")
        result = getattr(importlib.import_module(module), name)(runs, out, **self.kwargs)
        return list(result or [self.call])


class _ArgError(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        raise DtdError(message)


def field_args(fields: dict[str, Any]) -> list[str]:
    """`dtd train` flags for config fields: lists as several values, model options as --model_opts KEY=VALUE."""
    out: list[str] = []
    for key, value in fields.items():
        if key == "model_options":
            if not isinstance(value, dict):
                raise DtdError(f"model_options: expected a mapping of option: value, got {value!r}")
            out += ["--model_opts", *(f"{k}={_text(v)}" for k, v in value.items())]
        elif isinstance(value, list):
            out += [f"--{key}", *map(_text, value)]
        else:
            out += [f"--{key}", _text(value)]
    return out


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _mapping(spec: dict, key: str, where: str) -> dict:
    value = spec.get(key) or {}
    if not isinstance(value, dict):
        raise DtdError(f"{where}: '{key}' expects a mapping, got {value!r}")
    return value


def load_spec(path: str | Path) -> Sweep:
    """Read and check a spec; every job's `dtd train` arguments are parsed and loaded as the child would."""
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DtdError(f"{path}: cannot read the sweep spec ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(spec, dict) or not spec.get("configs"):
        raise DtdError(f"{path}: a sweep spec is a mapping with at least 'configs: [PRESET, ...]'")
    if unknown := sorted(set(spec) - KEYS):
        raise DtdError(f"{path}: unknown key(s) {', '.join(unknown)}; a spec has {', '.join(sorted(KEYS))}")
    base = path.resolve().parent
    name = str(spec.get("name") or path.stem)
    configs = spec["configs"] if isinstance(spec["configs"], list) else [spec["configs"]]
    cells = _mapping(spec, "overrides", str(path)) or {"": {}}
    common = _mapping(spec, "fields", str(path))
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise DtdError(f"{path}: 'seeds' expects a list of integers, got {seeds!r}")
    resources = {k: float(v) for k, v in _mapping(spec, "resources", str(path)).items()}
    jobs = []
    for config in configs:
        ref = str(base / config) if (base / str(config)).is_file() else str(config)
        label = str(config).removesuffix(".yaml").removesuffix(".yml").replace("/", "-")
        for cell, fields in cells.items():
            if not isinstance(fields, dict):
                raise DtdError(f"{path}: overrides.{cell} expects a mapping of field: value, got {fields!r}")
            args = ("--config", ref, *field_args({**common, **fields}))
            model = _check(args, f"{path}: {config}" + (f", overrides.{cell}" if cell else ""), base)
            for seed in seeds:
                tags = {"config": str(config), "cell": str(cell) or "default", "model": model, "seed": str(seed)}
                job_name = f"{label}{'-' + str(cell) if cell else ''}-s{seed}"
                jobs.append(Job(job_name, (*args, "--seed", str(seed)), tags, resources=resources))
    jobs += _steps(spec, path, [j.name for j in jobs])
    _unique(jobs, path)
    where = Where(runs=base / spec.get("runs", f"runs/{name}"), records=base / spec.get("records", f"results/{name}"),
                  cwd=base)
    wandb = spec.get("wandb")
    if wandb is not None:
        wandb = {"project": wandb} if isinstance(wandb, str) else dict(wandb)
        wandb.setdefault("group", name)
    return Sweep(name, jobs, where, wandb, path)


def _check(args: tuple[str, ...], what: str, base: Path) -> str:
    """Parse and load the arguments as `dtd train` would: a wrong field fails now, not in a worker hours later."""
    parser = _ArgError(prog="dtd train", add_help=False)
    parser.add_argument("--config")
    add_config_arguments(parser)
    try:
        ns = parser.parse_args(list(args))
        return load_config(ns.config, overrides_from_args(ns)).model
    except DtdError as exc:
        raise DtdError(f"{what}: {exc}") from None


def _steps(spec: dict, path: Path, train: list[str]) -> list[Job]:
    out = []
    for name, step in _mapping(spec, "steps", str(path)).items():
        if not isinstance(step, dict) or ":" not in str(step.get("call", "")):
            raise DtdError(f"{path}: steps.{name} expects {{call: 'module:function', needs: all | [JOB, ...]}}")
        needs = step.get("needs", "all")
        needs = train if needs == "all" else needs
        if not isinstance(needs, list) or (missing := [n for n in needs if n not in train]):
            raise DtdError(f"{path}: steps.{name}.needs names no job of this sweep: {needs if not isinstance(needs, list) else missing}")
        ref = StepRef(str(step["call"]), dict(step.get("kwargs") or {}))
        out.append(Job(str(name), (), {"step": str(name)}, step=ref, needs=tuple(needs)))
    return out


def _unique(jobs: list[Job], path: Path) -> None:
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise DtdError(f"{path}: two jobs are named {job.name}; give the configs or cells distinct names")
        seen.add(job.name)
