"""`dtd iql train`: Implicit Q-Learning on an offline dataset, for its state value V(s) (the value goal).

One step on a batch of transitions (s, a, r, s', done), states normalised with the dataset statistics:
  V:     expectile regression of V(s) towards min(Q1_targ, Q2_targ)(s, a)
  Q:     MSE of Q1(s, a), Q2(s, a) towards r + discount (1 - done) V(s')
  actor: advantage-weighted regression, weight exp(temperature (Q_targ - V)) clipped at 100
  targets: Polyak averaging with rate tau.
The run folder mirrors `dtd train`: config.yaml, metrics.jsonl, tb/, checkpoints/last.pt (atomic).
At the end the value of every dataset state gives the range (large, small) the goal scaling uses,
stored in the run record with the state statistics, so `dtd.runs.load_critic` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from dtd import paths, runs
from dtd.config import IQLConfig, check_iql_config, save_yaml
from dtd.data.loaders import load_dataset
from dtd.device import activate, check_memory, resolve_device
from dtd.errors import DtdError
from dtd.models import count_parameters
from dtd.models.iql import IQL, IQLNetConfig, ValueCritic, expectile_loss
from dtd.runs import Checkpoint, RunInfo


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
    check_iql_config(cfg)
    device = resolve_device(cfg.device)
    name = cfg.run_name or paths.auto_run_name("iql", cfg.dataset, cfg.seed)
    hint = "use --force to overwrite it"
    paths.check_run_target(cfg.out_dir, name, force, hint)  # before any work; created only after loading
    activate(device)
    dataset = load_dataset(cfg.dataset)
    mean, std = dataset.state_stats()
    data = transitions(dataset, cfg.reward_scale, cfg.reward_shift)
    data["s"], data["s2"] = (data["s"] - mean) / std, (data["s2"] - mean) / std
    n = len(data["r"])

    net_cfg = IQLNetConfig(dataset.obs_dim, dataset.act_dim, **cfg.model_options)
    check_iql_memory(cfg, net_cfg, device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tensors = {k: torch.from_numpy(v).to(device) for k, v in data.items()}
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


def check_iql_memory(cfg: IQLConfig, net_cfg: IQLNetConfig, device: str) -> None:
    """Refuse, before any work, sizes this machine cannot hold: the networks (counted without building them)
    with gradients and Adam state, and one batch with its indices and one hidden activation (a lower bound)."""
    params = count_parameters(lambda **layers: IQL(dataclasses.replace(net_cfg, **layers)),
                              {"n_layers": net_cfg.n_layers})
    batch = cfg.batch_size * (2 * net_cfg.state_dim + net_cfg.act_dim + 2 + net_cfg.hidden + 2)
    check_memory(4 * (4 * params + batch), device, f"iql ({params:,} parameters, batch {cfg.batch_size})",
                 "lower --batch-size, --hidden or --n-layers")


def _train_loop(cfg: IQLConfig, run_dir: Path, model, opts: dict, tensors: dict, n: int, rng, dataset, mean, std,
                net_cfg, progress: bool) -> None:
    """The IQL steps, logs and checkpoints of train_iql, inside its run folder."""
    device = next(model.parameters()).device
    save_yaml(cfg, run_dir / paths.CONFIG_FILE)
    metrics = open(run_dir / "metrics.jsonl", "a")
    tb = SummaryWriter(str(run_dir / "tb"))

    def save(step: int, large: float | None = None, small: float | None = None) -> None:
        refs = None if dataset.ref_min_score is None or dataset.ref_max_score is None else (
            float(dataset.ref_min_score), float(dataset.ref_max_score))
        info = RunInfo("iql", dataclasses.asdict(net_cfg), cfg, mean, std, dataset.env_id, refs, "", cfg.dataset, step,
                       None if large is None else (large, small))
        optimizer = {k: o.state_dict() for k, o in opts.items()}
        runs.save_checkpoint(Checkpoint(info, model.state_dict(), optimizer), run_dir / paths.CKPT_DIR / runs.LAST)

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
                try:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                except OSError as exc:  # a full disk: name the file (a write error carries no filename)
                    raise DtdError(f"{metrics.name}: could not write it ({exc.strerror or exc})") from None
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

    values = ValueCritic(model, mean, std, 0.0, 1.0, str(device)).values(
        np.concatenate([ep.observations for ep in dataset.episodes]))
    save(cfg.steps, float(values.max()), float(values.min()))
