"""The run record: what a trained run is, written by both trainers and read by every later tool.

A run folder holds config.yaml, metrics.jsonl, tb/ and checkpoints/*.pt. A checkpoint file is one
dict: ``run`` (``RunInfo.to_dict()``), ``model`` (the state dict), ``step``, and the trainer's own
resume state (optimizer, scheduler, rng_ranks, world_size). ``RunInfo`` holds everything needed to
use the weights (model config, state statistics, environment, reference scores, goal, dataset), so
``dtd eval``, ``dtd.Policy``, export and attention never reload the dataset or guess a default.

This is the only module that reads checkpoint dicts. dtd 0.1 checkpoints (flat dicts without
``run``) are read into the same RunInfo; what they never recorded (reference scores) is marked.
Files are written to a temporary name and renamed, so a kill mid-write keeps the previous one.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dtd.config import IQLConfig, TrainConfig, config_from_dict, iql_config_from_dict
from dtd.errors import DtdError
from dtd.models import SequenceModel, rebuild_model
from dtd.models.iql import IQL, IQLNetConfig, ValueCritic
from dtd.paths import CKPT_DIR, CONFIG_FILE, write_atomic

LAST = "last.pt"
FORMAT = 2  # dtd 0.1 wrote format 1: a flat dict without "run"


@dataclass
class RunInfo:
    """One trained run, as later tools need it (no dataset, no trainer defaults)."""

    model_name: str  # dtd | dt-small | dt-large | bc | iql
    model_config: dict[str, Any]  # the model config's fields (dtd.models.rebuild_model)
    config: TrainConfig | IQLConfig  # the trainer's full config
    state_mean: np.ndarray  # (S,) float32, the training data's statistics
    state_std: np.ndarray  # (S,) float32
    env_id: str | None  # the evaluation environment
    ref_scores: tuple[float, float] | None  # the dataset's (random, expert) returns; None: D4RL's for env_id
    goal: str  # rtg | maze | iql
    dataset: str  # the source the run was trained on
    step: int = 0
    value_range: tuple[float, float] | None = None  # IQL critics: (large, small) V over the dataset
    format: int = FORMAT  # 1: read from a dtd 0.1 checkpoint (its reference scores were never recorded)

    @property
    def context_len(self) -> int:
        return int(self.model_config["context_len"])

    @property
    def max_ep_len(self) -> int:
        return int(self.model_config["max_ep_len"])

    @property
    def obs_dim(self) -> int:
        return int(np.asarray(self.state_mean).size)

    @property
    def act_dim(self) -> int:
        return int(self.model_config["act_dim"])

    @property
    def goal_dim(self) -> int:
        return int(self.model_config.get("goal_dim", 1))

    @property
    def reward_scale(self) -> float:
        """Return-to-go divisor of a sequence-model run."""
        return float(self.config.reward_scale)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out.update(config=dataclasses.asdict(self.config), trainer=_trainer(self.config),
                   state_mean=np.asarray(self.state_mean, np.float32), state_std=np.asarray(self.state_std, np.float32))
        return out

    @staticmethod
    def from_dict(data: dict[str, Any], source: str) -> "RunInfo":
        data = dict(data)
        trainer, config = data.pop("trainer"), dict(data.pop("config"))
        cfg = iql_config_from_dict(config, source) if trainer == "iql" else config_from_dict(config, source)
        names = {f.name for f in dataclasses.fields(RunInfo)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DtdError(f"{source}: written by a newer dtd (unknown run fields {', '.join(unknown)})")
        return RunInfo(config=cfg, **data)


def _trainer(config: TrainConfig | IQLConfig) -> str:
    return "iql" if isinstance(config, IQLConfig) else "train"


@dataclass
class Checkpoint:
    """A checkpoint file's contents: the run record, the weights and (for `dtd train --resume`) the
    optimiser, scheduler and every rank's RNG state."""

    info: RunInfo
    weights: dict[str, Any]
    optimizer: Any = None
    scheduler: Any = None
    rng_ranks: list[Any] = field(default_factory=list)
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "run": self.info.to_dict(), "model": self.weights, "step": self.info.step,
                "optimizer": self.optimizer, "scheduler": self.scheduler, "rng_ranks": self.rng_ranks,
                "world_size": self.world_size}


# ---- files ----------------------------------------------------------------------------------


def save_checkpoint(ckpt: Checkpoint, path: str | Path) -> None:
    """torch.save to a temporary name, then os.replace: readers never see a half-written file, and a
    full disk is one DtdError naming the file, with no temporary file left (dtd.paths.write_atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: a failed write keeps its OSError (the reason) as context
            torch.save(ckpt.to_dict(), fh)

    write_atomic(path, write)


def is_checkpoint_file(path: str | Path) -> bool:
    """True for a file read_checkpoint reads (a torch.save archive holding a dtd checkpoint): such a file may
    be a run's only copy of its weights, so no command overwrites it. TorchScript archives are not."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    if not any(n.endswith("/data.pkl") for n in names) or any("/code/" in n for n in names):
        return False
    try:
        read_checkpoint(path)
    except DtdError:
        return False
    return True


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> Checkpoint:
    """A checkpoint file of either format; missing, unreadable or foreign files raise one DtdError.

    Checkpoints hold numpy arrays and RNG states, so they are unpickled in full: load only your own.
    """
    path = Path(path)
    if not path.is_file():
        raise DtdError(f"{path}: no such checkpoint")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated zip, random bytes, pickle errors all surface differently
        raise DtdError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    need = ("run", "model", "step") if isinstance(raw, dict) and "run" in raw else _LEGACY_KEYS
    missing = [k for k in need if not isinstance(raw, dict) or k not in raw]
    if missing:
        raise DtdError(f"{path}: not a dtd checkpoint (missing {', '.join(missing)})")
    info = RunInfo.from_dict(raw["run"], str(path)) if "run" in raw else _legacy_info(raw, str(path))
    ranks = raw.get("rng_ranks") or ([raw["rng"]] if raw.get("rng") is not None else [])
    return Checkpoint(info, raw["model"], raw.get("optimizer"), raw.get("scheduler"), ranks,
                      int(raw.get("world_size") or 1))


_LEGACY_KEYS = ("model", "model_name", "model_kwargs", "step")


def _legacy_info(raw: dict[str, Any], source: str) -> RunInfo:
    """The RunInfo of a dtd 0.1 checkpoint: its config and statistics; reference scores unknown."""
    name, config = raw["model_name"], dict(raw.get("config") or {})
    if name == "iql":
        cfg: TrainConfig | IQLConfig = iql_config_from_dict(config, source)
        large, small = raw.get("value_large"), raw.get("value_small")
        value_range = None if large is None else (float(large), float(small))
    else:
        cfg, value_range = config_from_dict(config, source), None
    goal = "rtg" if name == "iql" else cfg.goal
    return RunInfo(name, dict(raw["model_kwargs"]), cfg, np.asarray(raw.get("state_mean"), np.float32),
                   np.asarray(raw.get("state_std"), np.float32), getattr(cfg, "env_id", "") or None, None, goal,
                   cfg.dataset, int(raw["step"]), value_range, format=1)


def find_checkpoint(run_dir: str | Path) -> Path:
    """run_dir/checkpoints/last.pt, or a checkpoint file itself; DtdError for a folder that is not a run."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise DtdError(f"{run_dir}: no such run folder")
    if not (run_dir / CONFIG_FILE).is_file():
        raise DtdError(f"{run_dir}: not a dtd run folder (no {CONFIG_FILE})")
    path = run_dir / CKPT_DIR / LAST
    if not path.is_file():
        raise DtdError(f"{run_dir}: run has no checkpoint yet ({CKPT_DIR}/{LAST} missing)")
    return path


def load_run(run_dir: str | Path, map_location: str = "cpu") -> tuple[Any, RunInfo]:
    """(policy model in eval mode, RunInfo) of a run folder's last checkpoint (or a checkpoint path).

    An IQL critic run has no policy to evaluate, export or analyse: one DtdError says how to use it."""
    return _load(find_checkpoint(run_dir), map_location, critic=False)


def _load(path: Path, map_location: str, critic: bool) -> tuple[Any, RunInfo]:
    ckpt = read_checkpoint(path, map_location)
    info = ckpt.info
    if (info.model_name == "iql") != critic:
        if critic:
            raise DtdError(f"{path}: not an IQL critic (model {info.model_name!r}); train one with `dtd iql train`")
        raise DtdError(f"{path}: an IQL critic run (dtd iql train), not a policy; use it as the value goal of a "
                       f"policy run: dtd train --goal iql --critic {path.parents[1] if path.name == LAST else path}")
    check_finite_weights(ckpt.weights, path)
    model = IQL(IQLNetConfig(**info.model_config)) if info.model_name == "iql" else build(info)
    try:
        model.load_state_dict(ckpt.weights)
    except RuntimeError as exc:
        raise DtdError(f"{path}: weights do not fit {info.model_name} ({exc})") from None
    return model.eval(), info


def check_finite_weights(weights: dict[str, Any], path: str | Path) -> None:
    """Weights with NaN or inf give actions and returns that mean nothing: refuse them, naming a tensor."""
    bad = [k for k, v in weights.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise DtdError(f"{path}: the weights are not finite (NaN or inf in {bad[0]}{more}); the training diverged "
                       "before this checkpoint was saved")


def check_dataset_fits(info: RunInfo, obs_dim: int, act_dim: int, source: str) -> None:
    """A dataset used with a run (resume, attention windows) must have the run's state and action sizes."""
    if (obs_dim, act_dim) != (info.obs_dim, info.act_dim):
        raise DtdError(f"{source}: states of size {obs_dim} and actions of size {act_dim}, but the run was trained on "
                       f"{info.obs_dim} and {info.act_dim} ({info.dataset}); the dataset changed or is another task's")


def build(info: RunInfo) -> SequenceModel:
    """The (untrained) sequence model a run record describes, whatever today's defaults are."""
    return rebuild_model(info.model_name, info.model_config)


def load_critic(path: str | Path, device: str = "cpu") -> ValueCritic:
    """The value critic of a finished `dtd iql train` run (folder or checkpoint file): the IQL goal's."""
    if not str(path):
        raise DtdError("goal 'iql': set `critic:` to a `dtd iql train` run folder or checkpoint")
    file = Path(path) / CKPT_DIR / LAST if Path(path).is_dir() else Path(path)
    model, info = _load(file, device, critic=True)
    if info.value_range is None:
        raise DtdError(f"{path}: the IQL run did not finish (no value range in its checkpoint)")
    return ValueCritic(model, info.state_mean, info.state_std, *info.value_range, device)
