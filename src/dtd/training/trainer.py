"""The training loop, visible in one place (CleanRL style): `train(cfg)` and `resume(run_dir)`.

data (SequenceSampler) -> model (build_model) -> masked MSE on the valid actions (+ waypoint loss)
-> AdamW with the spec's warm-up/decay schedule and gradient clipping -> metrics.jsonl, TensorBoard,
periodic evaluation in the simulator (dtd.evaluation.evaluate) and atomic checkpoints (dtd.runs).

Resuming restores model, optimiser, scheduler and every RNG (python, numpy, torch, each rank's
sampler) from the last checkpoint, so an interrupted-then-resumed run ends with exactly the weights
of an uninterrupted one. Under torchrun each rank samples with seed + rank and rank 0 alone writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dtd import goals, paths, runs
from dtd.config import COMPILE_MODES, TrainConfig, check_seed, save_yaml
from dtd.data.loaders import load_dataset
from dtd.data.sampler import SequenceSampler
from dtd.device import check_memory, resolve_device
from dtd.envs import check_env_compat
from dtd.errors import DtdError
from dtd.evaluation import EvalSettings, evaluate
from dtd.evaluation.evaluator import check_rollout_memory
from dtd.evaluation.settings import env_step_limit
from dtd.models import LAYER_OPTIONS, MODELS, build_model, count_parameters
from dtd.runs import Checkpoint, RunInfo
from dtd.training import ddp, rng
from dtd.training.probe import probe_batch, shuffle_probe
from dtd.training.schedule import make_optimizer, make_scheduler

METRICS = "metrics.jsonl"
EVAL_FILE = "eval.json"
# fields --resume may change (they do not change what is learned); everything else is the saved run's
RESUMABLE = ("steps", "device", "threads", "max_minutes", "eval_workers", "compile")
Tracker = Callable[[Path, TrainConfig, int], Any]  # (run_dir, cfg, start step) -> an object with log(record), close()


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    evals: dict[int, dict] = field(default_factory=dict)  # step -> evaluate(...) output (rank 0)
    seconds: float = 0.0
    samples_per_s: float = 0.0  # training throughput over the whole run, all ranks together
    is_main: bool = True  # rank 0 (the only one that wrote anything)
    model: Any = None  # the trained model (unwrapped from DDP)

    @property
    def untrained(self) -> dict | None:
        return self.evals.get(0)

    @property
    def final(self) -> dict | None:
        return self.evals.get(self.step) if self.step else None


def train(cfg: TrainConfig, force: bool = False, progress: bool = True, tracker: Tracker | None = None) -> TrainResult:
    """Train a new run into cfg.out_dir/cfg.run_name; an existing folder is an error unless `force`.
    `tracker(run_dir, cfg, start)` (e.g. dtd.training.tracking.Wandb) gets every metrics.jsonl line too."""
    return _run(cfg, None, force, progress, tracker=tracker)


def resume(run_dir: str | Path, overrides: dict[str, Any] | None = None, progress: bool = True,
           tracker: Tracker | None = None) -> TrainResult:
    """Continue a run from its last checkpoint; only the RESUMABLE fields may be overridden.

    The run is the folder (or its checkpoints/last.pt): resuming from an older step_N.pt would rewind the run
    (rewrite last.pt, drop later metrics, orphan newer checkpoints), so any other file is refused."""
    path = runs.find_checkpoint(run_dir)
    folder = path.parent.parent if Path(run_dir).is_file() else Path(run_dir)
    if Path(run_dir).is_file() and not (path.name == runs.LAST and path.parent.name == paths.CKPT_DIR
                                        and paths.is_run_dir(folder)):
        raise DtdError(f"--resume {run_dir}: resume takes a run folder and continues from its "
                       f"{paths.CKPT_DIR}/{runs.LAST}; resuming from another checkpoint file would rewind the run "
                       "it came from (to evaluate it: dtd eval RUN --checkpoint NAME)")
    ckpt = runs.read_checkpoint(path)
    if not isinstance(ckpt.info.config, TrainConfig):
        raise DtdError(f"{run_dir}: not a `dtd train` run (model {ckpt.info.model_name}); it cannot be resumed here")
    cfg = dataclasses.replace(ckpt.info.config)
    for key, value in (overrides or {}).items():
        if key not in RESUMABLE:
            raise DtdError(f"--resume continues the saved config; only {', '.join(RESUMABLE)} may be changed, "
                           f"not {key}")
        setattr(cfg, key, value)
    cfg.check_ranges()
    if ckpt.info.step >= cfg.steps:
        raise DtdError(f"{run_dir}: already trained for {ckpt.info.step} of {cfg.steps} steps (pass --steps N to extend)")
    return _run(cfg, ckpt, False, progress, run_dir=folder, tracker=tracker)


# ---- the loop ---------------------------------------------------------------------------------


def _run(cfg: TrainConfig, ckpt: Checkpoint | None, force: bool, progress: bool, run_dir: Path | None = None,
         tracker: Tracker | None = None) -> TrainResult:
    import torch
    from tqdm.auto import tqdm

    cfg.check_ranges()
    resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")) if ddp_world() > 1 else None)
    if ckpt is None and cfg.context_len > cfg.max_ep_len:  # a window longer than any episode is only padding
        print(f"dtd: --context_len {cfg.context_len} is longer than --max_ep_len {cfg.max_ep_len}; using "
              f"{cfg.max_ep_len}")
        cfg.context_len = cfg.max_ep_len
    if ckpt is None:  # where the run goes: checked (not created) before any work
        name = cfg.run_name or paths.auto_run_name(cfg.preset or cfg.model, cfg.dataset, cfg.seed)
        paths.check_run_target(cfg.out_dir, name, force, _exists_hint(Path(cfg.out_dir) / name))
        cfg.run_name = name
    else:
        assert run_dir is not None
        paths.RunLock(run_dir).check_free()
        paths.check_output_dir(run_dir, "run folder")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    dist = ddp.init_distributed(cfg.device)
    lock, made, created, log = None, [], False, None
    try:
        device = ddp.rank_device(cfg.device, dist)
        # ---- data ----
        dataset = load_dataset(cfg.dataset, download=cfg.download)
        if not cfg.env_id:
            cfg.env_id = dataset.env_id or ""
        if cfg.eval_episodes > 0:
            if not cfg.env_id:
                raise DtdError(f"{cfg.dataset}: the dataset names no environment; pass --env_id or --eval_episodes 0")
            if ckpt is None and dist.is_main:
                check_env_compat(dataset, cfg.env_id)
        if ckpt is None:
            state_mean, state_std = dataset.state_stats()
        else:
            runs.check_dataset_fits(ckpt.info, dataset.obs_dim, dataset.act_dim, cfg.dataset)
            state_mean, state_std = ckpt.info.state_mean, ckpt.info.state_std
        # maze / IQL value goals: per-step tokens written into the episodes (dtd.goals)
        critic = runs.load_critic(cfg.critic, device) if cfg.goal == "iql" else None
        dataset = goals.with_goals(dataset, cfg.goal, state_mean, state_std, critic)
        goal_fn = goals.make_goal_fn(cfg.goal, state_mean, state_std, critic)  # None: return-to-go
        sampler = SequenceSampler(dataset, cfg.context_len, cfg.reward_scale, cfg.pct_traj, cfg.delayed,
                                  cfg.max_ep_len, seed=cfg.seed + dist.rank, state_mean=state_mean,
                                  state_std=state_std, goal="rtg" if cfg.goal == "rtg" else "episode")
        if cfg.goal == "maze":
            goals.add_waypoints(sampler, cfg.waypoint)
        goal_dim = 1 if cfg.goal == "rtg" else int(dataset.goal_dim or 1)
        ref_scores = None if dataset.ref_min_score is None or dataset.ref_max_score is None else (
            float(dataset.ref_min_score), float(dataset.ref_max_score))  # what evaluation normalises with

        # ---- seeds, model, optimiser ----
        if cfg.eval_episodes > 0:  # sizes this machine cannot hold: refused now, not at the end of training
            steps = min(cfg.eval_max_steps or cfg.max_ep_len, env_step_limit(cfg.env_id) or cfg.max_ep_len)
            check_rollout_memory(max(1, len(cfg.eval_targets)) * cfg.eval_episodes, max(steps, cfg.context_len),
                                 dataset.obs_dim + dataset.act_dim + goal_dim, device, workers=cfg.eval_workers)
        if ckpt is None:
            check_training_memory(cfg, dataset.obs_dim, dataset.act_dim, goal_dim, device)
        check_seed(cfg.seed + dist.rank, f"--seed + rank ({cfg.seed} + {dist.rank})")  # numpy's 32-bit seeds
        random.seed(cfg.seed + dist.rank)
        np.random.seed(cfg.seed + dist.rank)
        torch.manual_seed(cfg.seed + dist.rank)  # DDP then copies rank 0's initial weights to every rank
        if ckpt is None:
            model = build_model(cfg.model, dataset.obs_dim, dataset.act_dim, goal_dim, cfg.max_ep_len,
                                cfg.context_len, **cfg.model_options)
        else:  # the model the run was started with, whatever today's defaults are
            model = runs.build(ckpt.info)
        model = model.to(device)
        model_kwargs = _model_kwargs(model)
        optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay, device)
        scheduler = make_scheduler(optimizer, cfg.warmup_steps)
        start = 0
        if ckpt is not None:
            model.load_state_dict(ckpt.weights)
            optimizer.load_state_dict(ckpt.optimizer)
            scheduler.load_state_dict(ckpt.scheduler)
            ranks = ckpt.rng_ranks
            if len(ranks) == dist.world_size:
                rng.set_rng_state(ranks[dist.rank], sampler)
            elif dist.is_main:
                print(f"dtd: resuming with {dist.world_size} ranks a run saved with {len(ranks)}: "
                      "batches differ from an uninterrupted run")
            start = ckpt.info.step
        net = model
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[device] if device.startswith("cuda") else None,
                                          find_unused_parameters=True)
        if cfg.compile != "off":  # the training forward only; evaluation and checkpoints use `model` itself
            net = torch.compile(net, mode=COMPILE_MODES[cfg.compile])

        # ---- run folder and logs (rank 0) ----
        if dist.is_main:
            if ckpt is None:
                run_dir, lock, made = paths.prepare_run_dir(cfg.out_dir, cfg.run_name, force,
                                                            _exists_hint(Path(cfg.out_dir) / cfg.run_name))
                created = True
            else:
                lock = paths.RunLock(run_dir).acquire()
        run_dir = ddp.broadcast_object(run_dir if dist.is_main else None, dist)
        log = _Logger(run_dir, start, enabled=dist.is_main)
        if tracker is not None and dist.is_main:  # an extra copy of every metrics line (wandb); rank 0 only
            log.sink = tracker(run_dir, cfg, start)
        if dist.is_main:
            save_yaml(cfg, run_dir / paths.CONFIG_FILE)
        result = TrainResult(run_dir, start, is_main=dist.is_main)

        saved = [start]  # the step of the newest checkpoint on disk (0: none yet)

        def stop_if_diverged(step: int) -> None:
            """Weights with NaN or inf are neither evaluated nor saved: the last finite checkpoint stays."""
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise DtdError(f"training stopped: the weights became NaN or inf at step {step} (try a lower --lr); "
                               + _kept(saved[0], run_dir))

        def evaluate_now(step: int) -> None:
            if cfg.eval_episodes > 0:
                stop_if_diverged(step)
            if cfg.eval_episodes > 0 and dist.is_main:
                out = _evaluate(model, cfg, state_mean, state_std, ref_scores, goal_fn, device, progress)
                result.evals[step] = out
                log.eval(step, out)
            ddp.barrier(dist)

        def save(step: int) -> None:
            stop_if_diverged(step)
            states = ddp.gather_objects(rng.get_rng_state(sampler), dist)
            if not dist.is_main:
                return
            info = RunInfo(cfg.model, model_kwargs, cfg, np.asarray(state_mean, np.float32),
                           np.asarray(state_std, np.float32), cfg.env_id or None, ref_scores, cfg.goal, cfg.dataset, step)
            folder = run_dir / paths.CKPT_DIR
            runs.save_checkpoint(Checkpoint(info, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(),
                                            states, dist.world_size), folder / runs.LAST)
            saved[0] = step
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:  # keep periodic copies too
                paths.write_atomic(folder / f"step_{step:07d}.pt", lambda tmp: shutil.copyfile(folder / runs.LAST, tmp))

        probe = probe_batch(sampler, cfg.seed, device) if cfg.probe_steps and dist.is_main else None

        if start == 0 and cfg.eval_untrained:
            evaluate_now(0)

        # ---- train ----
        autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.bf16)
        samples_per_step = cfg.batch_size * dist.world_size
        bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.model}", unit="step",
                   disable=not (progress and dist.is_main), dynamic_ncols=True)
        loss_sum, loss_n, t_log, steps_log = 0.0, 0, time.perf_counter(), 0
        t_train, steps_total = 0.0, 0
        net.train()
        step = start
        for step in range(start + 1, cfg.steps + 1):  # `step` = optimiser steps done after this one
            batch = {k: torch.from_numpy(v).to(device) for k, v in sampler.sample(cfg.batch_size).items()}
            mask = batch["mask"]  # (B, K) 1 on valid steps
            with autocast:
                out = net(batch["states"], batch["actions"], batch["goals"], batch["timesteps"], mask=mask)
            loss = masked_mse(out.actions.float(), batch["actions"], mask)
            if out.waypoints is not None and "waypoints" in batch:
                loss = loss + cfg.waypoint_weight * masked_mse(out.waypoints.float(), batch["waypoints"], mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            optimizer.step()
            scheduler.step()

            loss_val = loss.item()
            if not math.isfinite(loss_val):
                raise DtdError(f"training stopped: the loss became {loss_val} at step {step} (try a lower --lr); "
                               + _kept(saved[0], run_dir))
            loss_sum, loss_n, steps_log = loss_sum + loss_val, loss_n + 1, steps_log + 1
            bar.update(1)
            t_pause = time.perf_counter()
            # the wall-clock budget (main job): rank 0 decides, every rank stops at the same step
            over = cfg.max_minutes > 0 and t_train + t_pause - t_log > 60 * cfg.max_minutes
            last = step == cfg.steps or ddp.broadcast_object(over, dist)
            if (cfg.log_every and step % cfg.log_every == 0) or last:
                seconds = t_pause - t_log
                sps = samples_per_step * steps_log / max(seconds, 1e-9)
                t_train, steps_total = t_train + seconds, steps_total + steps_log
                log.train(step, loss_sum / loss_n, lr, sps)
                bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", samples_s=f"{sps:.0f}")
                loss_sum, loss_n, steps_log, t_log = 0.0, 0, 0, t_pause
            if probe is not None and step in cfg.probe_steps:
                log.probe(step, shuffle_probe(model, probe, masked_mse))
            if (cfg.eval_every and step % cfg.eval_every == 0) or last:
                bar.clear()
                net.eval()
                evaluate_now(step)
                net.train()
            if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or last:
                save(step)
            t_log += time.perf_counter() - t_pause  # logging, evaluation and saving are not training time
            if last:
                break
        bar.close()
        log.close()
        if step < cfg.steps and dist.is_main:
            print(f"dtd: stopped at step {step} of {cfg.steps}: the --max_minutes {cfg.max_minutes:g} budget "
                  "was reached (resume to continue)")
        result.step, result.model = step, model
        result.seconds = t_train
        result.samples_per_s = samples_per_step * steps_total / max(t_train, 1e-9)
        if dist.is_main and result.evals:
            _write_json(run_dir / EVAL_FILE, _eval_summary(result, cfg))
        ddp.barrier(dist)  # every rank done talking before the group is torn down
        return result
    except BaseException:
        if created:  # a run that failed before its first checkpoint must not block the next attempt
            if log is not None:
                log.close()
            paths.discard_failed_run(run_dir, lock, made)
        raise
    finally:
        net = None  # DDP holds the process group; gloo's threads must not outlive it
        if lock is not None:
            lock.release()
        ddp.cleanup(dist)


def masked_mse(pred, target, mask):
    """Mean squared error over valid positions: pred/target (B, K, D), mask (B, K) with 1 = valid."""
    err = ((pred - target) ** 2).mean(dim=-1)  # (B, K)
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


# ---- helpers ----------------------------------------------------------------------------------


def _model_kwargs(model) -> dict[str, Any]:
    """What build_model needs to rebuild this model: its config's fields."""
    return dataclasses.asdict(model.config)


def ddp_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _kept(step: int, run_dir: Path) -> str:
    """What a stopped run keeps: its newest (finite) checkpoint, or nothing (the run folder is removed)."""
    if not step:
        return "no checkpoint had been saved, so the run folder is removed"
    return f"the run keeps its last finite checkpoint, step {step} ({run_dir / paths.CKPT_DIR / runs.LAST})"


def check_training_memory(cfg: TrainConfig, obs_dim: int, act_dim: int, goal_dim: int, device: str) -> None:
    """Refuse, before any work, sizes this machine cannot hold: the model's parameters (counted without building
    it, dtd.models.count_parameters) with their gradients and AdamW state, plus one batch and one (B, K, hidden)
    activation; a lower bound, so a run that fits is never refused."""
    config_cls, preset = MODELS[cfg.model][1:]
    config = config_cls(state_dim=obs_dim, act_dim=act_dim, **{**preset, **cfg.model_options})
    layers = {name: getattr(config, name) for name in LAYER_OPTIONS if hasattr(config, name)}
    params = count_parameters(lambda **counts: build_model(cfg.model, obs_dim, act_dim, goal_dim, cfg.max_ep_len,
                                                           cfg.context_len, **{**cfg.model_options, **counts}), layers)
    batch = cfg.batch_size * cfg.context_len * (obs_dim + act_dim + goal_dim + int(getattr(config, "hidden_size", 1)))
    check_memory(4 * (4 * params + batch), device, f"training {cfg.model} ({params:,} parameters, batch "
                 f"{cfg.batch_size} x {cfg.context_len})", "lower --batch_size, --context_len, --hidden_size, "
                 "--max_ep_len or the other model sizes")


def _exists_hint(path: Path) -> str:
    return f"use --resume {path} to continue it, or --force to overwrite"


def _evaluate(model, cfg: TrainConfig, state_mean, state_std, ref_scores, goal_fn, device: str, progress: bool) -> dict:
    """Simulator episodes for every target in one batched rollout, without touching the training RNG."""
    was_training = model.training
    model.eval()
    try:
        with rng.preserved_rng():
            return evaluate(model, EvalSettings(
                env_id=cfg.env_id, targets=cfg.eval_targets or None, episodes=cfg.eval_episodes, seed=cfg.seed,
                state_mean=state_mean, state_std=state_std, reward_scale=cfg.reward_scale,
                context_len=cfg.context_len, max_ep_len=cfg.max_ep_len, max_steps=cfg.eval_max_steps or None,
                delayed=cfg.delayed, device=device, ref_scores=ref_scores, goal_fn=goal_fn, progress=progress,
                workers=cfg.eval_workers if device == "cpu" else 1,
            ))  # fmt: skip
    finally:
        model.train(was_training)


def eval_scores(out: dict) -> dict[str, dict[str, float]]:
    """evaluate(...) output -> {target: {return_mean, return_std, normalized_mean, normalized_std}}."""
    keys = ("return_mean", "return_std", "normalized_mean", "normalized_std", "length_mean", "success_rate")
    return {t: {k: r[k] for k in keys if k in r} for t, r in out["targets"].items()}


def _eval_summary(result: TrainResult, cfg: TrainConfig) -> dict:
    """eval.json: the final evaluation (evaluate's dict) plus the step, and the untrained model's scores."""
    last = max(result.evals)
    out = dict(result.evals[last], step=last, checkpoint=f"{paths.CKPT_DIR}/{runs.LAST}")
    if 0 in result.evals and last != 0:
        out["untrained"] = result.evals[0]
    return out


def _write_json(path: Path, data: Any) -> None:
    paths.write_text_atomic(path, json.dumps(data, indent=1))


class _Logger:
    """metrics.jsonl (one JSON object per line) and TensorBoard scalars; a no-op on ranks > 0.

    On resume, lines past the checkpoint's step (written after it by the interrupted process) are
    dropped and TensorBoard purges its events past that step, so the logs read like one run.
    """

    def __init__(self, run_dir: Path, start: int, enabled: bool):
        self.enabled = enabled
        self.sink: Any = None  # a tracker's run (dtd.training.tracking), fed the same records
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / METRICS
        if start and self.path.is_file():
            kept = [ln for ln in self.path.read_bytes().splitlines() if _line_step(ln) <= start]
            paths.write_atomic(self.path, lambda tmp: Path(tmp).write_bytes(b"".join(ln + b"\n" for ln in kept)))
        self.file = open(self.path, "a")
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=start + 1 if start else None)

    def _write(self, record: dict) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as exc:  # a full disk: name the file (a write error has no filename of its own)
            raise DtdError(f"{self.path}: could not write it ({exc.strerror or exc})") from None
        if self.sink is not None:
            self.sink.log(record)

    def train(self, step: int, loss: float, lr: float, samples_per_s: float) -> None:
        if not self.enabled:
            return
        self._write({"step": step, "loss": loss, "lr": lr, "samples_per_s": samples_per_s})
        self.tb.add_scalar("train/loss", loss, step)
        self.tb.add_scalar("train/lr", lr, step)
        self.tb.add_scalar("train/samples_per_s", samples_per_s, step)

    def probe(self, step: int, losses: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._write({"step": step, "probe": losses})
        for key, value in losses.items():
            self.tb.add_scalar(f"probe/{key}", value, step)

    def eval(self, step: int, out: dict) -> None:
        if not self.enabled:
            return
        scores = eval_scores(out)
        self._write({"step": step, "eval": scores})
        for target, s in scores.items():
            for key, value in s.items():
                self.tb.add_scalar(f"eval/{target}/{key}", value, step)
        self.tb.flush()

    def close(self) -> None:
        if self.enabled and not self.file.closed:
            self.file.close()
            self.tb.close()
        if self.sink is not None:
            self.sink.close()
            self.sink = None


def _line_step(line: bytes) -> int:
    """The step of a metrics.jsonl line; a line that cannot be read (half-written, not UTF-8, not an
    object, a null or missing step) counts as past every step, so resume drops it."""
    try:
        return int(json.loads(line.decode("utf-8"))["step"])
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return 1 << 62
