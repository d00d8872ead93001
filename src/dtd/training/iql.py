"""`dtd iql train`: Implicit Q-Learning on an offline dataset, for its state value V(s) (the value goal).

One step on a batch of transitions (s, a, r, s', done), states normalised with the dataset statistics:
  V:     expectile regression of V(s) towards min(Q1_targ, Q2_targ)(s, a)
  Q:     MSE of Q1(s, a), Q2(s, a) towards r + discount (1 - done) V(s')
  actor: advantage-weighted regression, weight exp(temperature (Q_targ - V)) clipped at 100
  targets: Polyak averaging with rate tau.
The run folder mirrors `dtd train`: config.yaml, metrics.jsonl, tb/, checkpoints/last.pt (atomic).
At the end the value of every dataset state gives the range (large, small) the goal scaling uses,
stored in the checkpoint with the state statistics, so `load_critic` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dtd.errors import DtdError
from dtd.training import checkpoint as ckpt_io


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


def transitions(dataset, reward_scale: float = 1.0, reward_shift: float = 0.0) -> dict[str, np.ndarray]:
    """Flat (s, a, r, s', done) arrays. The last step of an episode that did not terminate has no
    next state (unless infos/next_observations holds it) and is dropped."""
    parts: dict[str, list] = {k: [] for k in ("s", "a", "r", "s2", "d")}
    for ep in dataset.episodes:
        T = len(ep)
        nxt = ep.infos.get("next_observations")
        if nxt is not None and nxt.shape == ep.observations.shape:
            keep, s2 = np.arange(T), np.asarray(nxt, np.float32)
        else:
            s2 = np.concatenate([ep.observations[1:], ep.observations[-1:]])  # last row used only if terminal
            keep = np.arange(T if ep.terminals[-1] else T - 1)
        parts["s"].append(ep.observations[keep])
        parts["a"].append(ep.actions[keep])
        parts["r"].append(ep.rewards[keep] * reward_scale + reward_shift)
        parts["s2"].append(s2[keep])
        parts["d"].append(ep.terminals[keep].astype(np.float32))
    out = {k: np.concatenate(v).astype(np.float32) for k, v in parts.items()}
    if len(out["r"]) == 0:
        raise DtdError(f"{dataset.name}: no transitions with a next state for IQL")
    return out


def iql_losses(model, batch: dict, discount: float, expectile: float, temperature: float) -> dict:
    """The three IQL losses on one batch of tensors s (B,S), a (B,A), r (B,), s2 (B,S), d (B,)."""
    import torch

    from dtd.models.iql import expectile_loss

    with torch.no_grad():
        q_targ = model.target_q(batch["s"], batch["a"])  # (B,)
        next_v = model.v(batch["s2"])  # (B,)
        q_backup = batch["r"] + discount * (1.0 - batch["d"]) * next_v  # (B,)
    v = model.v(batch["s"])
    value_loss = expectile_loss(q_targ - v, expectile)
    q1, q2 = model.qs(batch["s"], batch["a"])
    q_loss = ((q1 - q_backup) ** 2).mean() + ((q2 - q_backup) ** 2).mean()
    weight = torch.exp(temperature * (q_targ - v.detach())).clamp(max=100.0)  # (B,)
    actor_loss = (weight * ((model.act(batch["s"]) - batch["a"]) ** 2).sum(-1)).mean()
    return {"value_loss": value_loss, "q_loss": q_loss, "actor_loss": actor_loss}


def train_iql(cfg: IQLConfig, progress: bool = True, force: bool = False) -> Path:
    """Train IQL on cfg.dataset into cfg.out_dir/run_name; returns the run folder."""
    import torch

    from dtd import paths
    from dtd.data.loaders import load_dataset
    from dtd.device import activate, resolve_device
    from dtd.models.iql import IQL, IQLNetConfig

    check_iql_config(cfg)
    device = resolve_device(cfg.device)
    name = cfg.run_name or f"iql-{Path(cfg.dataset.replace('/', '-')).stem}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    hint = "use --force to overwrite it"
    paths.check_run_target(cfg.out_dir, name, force, hint)  # before any work; created only after loading
    activate(device)
    dataset = load_dataset(cfg.dataset)
    mean, std = dataset.state_stats()
    data = transitions(dataset, cfg.reward_scale, cfg.reward_shift)
    data["s"], data["s2"] = (data["s"] - mean) / std, (data["s2"] - mean) / std
    n = len(data["r"])

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tensors = {k: torch.from_numpy(v).to(device) for k, v in data.items()}
    net_cfg = IQLNetConfig(dataset.obs_dim, dataset.act_dim, cfg.hidden, cfg.n_layers)
    model = IQL(net_cfg).to(device)
    opts = {
        "value": torch.optim.Adam(model.value.parameters(), lr=cfg.lr),
        "q": torch.optim.Adam(list(model.q1.parameters()) + list(model.q2.parameters()), lr=cfg.lr),
        "actor": torch.optim.Adam(model.actor.parameters(), lr=cfg.lr),
    }

    run_dir, lock, made = paths.prepare_run_dir(cfg.out_dir, name, force, hint)
    cfg = dataclasses.replace(cfg, run_name=name)
    try:
        _train_loop(cfg, run_dir, model, opts, tensors, n, rng, dataset, mean, std, net_cfg, progress)
    except BaseException:
        # IQL has no resume: a run that did not finish is worth nothing and must not block a rerun
        paths.discard_failed_run(run_dir, lock, made, keep_checkpoints=False)
        raise
    finally:
        lock.release()
    return run_dir


def check_iql_config(cfg: IQLConfig) -> None:
    """Every IQL setting in range (floats finite) before any work: one DtdError naming the flag."""
    from dtd.paths import check_run_name

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


def _train_loop(cfg: IQLConfig, run_dir: Path, model, opts: dict, tensors: dict, n: int, rng, dataset, mean, std,
                net_cfg, progress: bool) -> None:
    """The IQL steps, logs and checkpoints of train_iql, inside its run folder."""
    import torch
    import yaml
    from torch.utils.tensorboard import SummaryWriter
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    tmp = run_dir / "config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    os.replace(tmp, run_dir / ckpt_io.CONFIG_FILE)
    metrics = open(run_dir / "metrics.jsonl", "a")
    tb = SummaryWriter(str(run_dir / "tb"))

    def save(step: int, large: float | None = None, small: float | None = None) -> None:
        state = {
            "model": model.state_dict(), "model_name": "iql", "model_kwargs": dataclasses.asdict(net_cfg),
            "state_mean": mean, "state_std": std, "config": dataclasses.asdict(cfg), "step": step,
            "optimizer": {k: o.state_dict() for k, o in opts.items()}, "value_large": large, "value_small": small,
        }  # fmt: skip
        ckpt_io.save_checkpoint(state, run_dir / ckpt_io.CKPT_DIR / ckpt_io.LAST)

    try:
        sums: dict[str, float] = {}
        n_acc = 0
        bar = tqdm(range(1, cfg.steps + 1), desc="train iql", unit="step", disable=not progress, dynamic_ncols=True)
        for step in bar:
            idx = torch.from_numpy(rng.integers(0, n, size=cfg.batch_size)).to(device)
            batch = {k: v[idx] for k, v in tensors.items()}
            losses = iql_losses(model, batch, cfg.discount, cfg.expectile, cfg.temperature)
            for key, opt in (("value", opts["value"]), ("q", opts["q"]), ("actor", opts["actor"])):
                opt.zero_grad(set_to_none=True)
                losses[f"{key}_loss"].backward()
                opt.step()
            model.update_targets(cfg.tau)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            n_acc += 1
            if (cfg.log_every and step % cfg.log_every == 0) or step == cfg.steps:
                record = {"step": step, **{k: v / n_acc for k, v in sums.items()}}
                if not all(math.isfinite(v) for v in record.values()):
                    raise DtdError(f"iql: a loss became non-finite at step {step} (try a lower --lr)")
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                for k, v in record.items():
                    if k != "step":
                        tb.add_scalar(f"iql/{k}", v, step)
                bar.set_postfix(v=f"{record['value_loss']:.3g}", q=f"{record['q_loss']:.3g}")
                sums, n_acc = {}, 0
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step != cfg.steps:
                save(step)
    finally:
        metrics.close()
        tb.close()

    from dtd.models.iql import ValueCritic

    values = ValueCritic(model, mean, std, 0.0, 1.0, str(device)).values(
        np.concatenate([ep.observations for ep in dataset.episodes]))
    save(cfg.steps, float(values.max()), float(values.min()))


def load_critic(path: str | Path, device: str = "cpu"):
    """A ValueCritic from a `dtd iql train` run folder or its checkpoint file."""
    from dtd.models.iql import IQL, IQLNetConfig, ValueCritic

    path = Path(path)
    file = path / ckpt_io.CKPT_DIR / ckpt_io.LAST if path.is_dir() else path
    ckpt = ckpt_io.load_checkpoint(file, map_location=device)
    if ckpt.get("model_name") != "iql":
        raise DtdError(f"{path}: not an IQL critic (model {ckpt.get('model_name')!r}); train one with `dtd iql train`")
    if ckpt.get("value_large") is None:
        raise DtdError(f"{path}: the IQL run did not finish (no value range in its checkpoint)")
    model = IQL(IQLNetConfig(**ckpt["model_kwargs"]))
    model.load_state_dict(ckpt["model"])
    return ValueCritic(model, ckpt["state_mean"], ckpt["state_std"], ckpt["value_large"], ckpt["value_small"], device)
