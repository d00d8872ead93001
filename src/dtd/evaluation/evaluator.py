"""``evaluate(model, settings)``: N episodes per target in the simulator, summarised per target.

The plan is every (target, seed) pair in target order; the rollout engine (dtd.evaluation.rollout)
plays them together in one vector env, or split over forked CPU workers (dtd.evaluation.workers), or
one at a time on the reference path. Every path gives identical returns for the same seeds.
``evaluate_run`` applies a run's recorded settings (dtd.evaluation.settings.run_settings).
"""

from __future__ import annotations

import math
import multiprocessing
import time
import warnings
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dtd.device import check_memory
from dtd.envs import make_env, make_vector_env
from dtd.errors import DtdError
from dtd.evaluation.results import Episodes, reference_scores, summarize, take, target_key
from dtd.evaluation.rollout import Plan, RolloutSpec, rollout_batched, rollout_reference
from dtd.evaluation.settings import EvalSettings, check_targets, env_step_limit, run_settings, target_returns
from dtd.evaluation.workers import rollout_workers
from dtd.goals import GoalFn, ReturnToGo
from dtd.runs import RunInfo


def evaluate(model, settings: EvalSettings) -> dict:
    """Evaluate ``model`` for each target return (``EvalSettings`` documents every field).

    Returns a JSON-ready dict: the settings used, one ``summarize`` entry per target under "targets",
    the environment steps and their rate, and the best target's score.
    """
    s = settings
    if s.episodes < 1:
        raise DtdError(f"evaluation: episodes must be >= 1, got {s.episodes}")
    if s.workers < 1:
        raise DtdError(f"evaluation: workers must be >= 1, got {s.workers}")
    targets = list(target_returns(s.env_id) if s.targets is None else s.targets)
    if not targets:
        raise DtdError("evaluation: no target returns given")
    if not all(math.isfinite(t) for t in targets):
        raise DtdError(f"evaluation: target returns must be finite numbers, got {targets}")
    goal_fn = ReturnToGo(s.reward_scale, s.delayed) if s.goal_fn is None else s.goal_fn
    check_targets(targets, goal_fn)
    max_steps = s.max_ep_len if s.max_steps is None else s.max_steps
    max_steps = min(max_steps, env_step_limit(s.env_id) or max_steps)  # no episode runs past its env's limit
    act_dim = int(getattr(getattr(model, "config", None), "act_dim", 0) or 0)
    check_rollout_memory(len(targets) * s.episodes, max(max_steps, s.context_len),
                         np.asarray(s.state_mean).size + act_dim + int(getattr(goal_fn, "goal_dim", 1)), s.device,
                         s.batched, s.workers)
    plan = [(float(t), s.seed + i) for t in targets for i in range(s.episodes)]  # target k: plan[k*E : (k+1)*E]
    workers = min(s.workers, len(plan)) if s.batched else 1
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        warnings.warn("evaluation: workers need the 'fork' start method (not available here); using one process")
        workers = 1
    spec = RolloutSpec(
        np.asarray(s.state_mean, dtype=np.float32).reshape(-1), np.asarray(s.state_std, dtype=np.float32).reshape(-1),
        s.context_len, s.max_ep_len, max_steps, s.device,
    )  # fmt: skip
    ref = reference_scores(s.env_id, s.ref_scores)
    start = time.perf_counter()  # the timing includes making the environments
    if workers > 1:
        desc = f"eval {s.env_id} ({len(plan)} episodes, {workers} workers)"
        with tqdm(desc=desc, unit="step", disable=not s.progress, leave=False) as bar:
            eps = rollout_workers(model, s.env_id, s.vector, plan, goal_fn, spec, workers, bar)
    else:
        eps = _rollout_here(model, s.env_id, plan, goal_fn, spec, s.batched, s.vector, s.progress)
    results, env_steps = {}, 0
    for k, target in enumerate(targets):
        part = take(eps, k * s.episodes, (k + 1) * s.episodes)
        if not np.isfinite(part.returns).all():  # results that mean nothing are not reported
            raise DtdError(f"evaluation: target {target:g} gave non-finite returns (NaN or inf): the model's actions "
                           "were not finite numbers")
        results[target_key(target)] = summarize(target, part, ref)
        env_steps += int(part.lengths.sum())
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "env_id": s.env_id,
        "episodes": s.episodes,
        "seed": s.seed,
        "reward_scale": s.reward_scale,
        "delayed": s.delayed,
        "context_len": s.context_len,
        "max_ep_len": s.max_ep_len,
        "max_steps": max_steps,
        "batched": s.batched,
        "workers": workers,
        "ref_scores": None if ref is None else list(ref),  # (random, expert) returns behind "normalized"
        "targets": results,
        "env_steps": env_steps,
        "seconds": seconds,
        "env_steps_per_s": env_steps / max(seconds, 1e-9),
    }
    key = "normalized_mean" if ref is not None else "return_mean"
    best = max(results, key=lambda k: results[k][key])
    out.update(best_target=best, best_score=results[best][key], score_kind=key.removesuffix("_mean"))
    return out


ENV_BYTES = 1 << 20  # a MuJoCo environment's memory, measured: about 1 MiB each (Hopper-v5)


def check_rollout_memory(n: int, steps: int, width: int, device: str = "cpu", batched: bool = True,
                         workers: int = 1) -> None:
    """Refuse, before making any environment, an evaluation this machine cannot hold: N environments (host
    memory) and the batched engine's (N, T, width = state + action + goal) float32 history buffers (the
    model's device); a lower bound, so an evaluation that fits is never refused."""
    buffers = 4 * n * steps * width if batched else 0
    on_host = device == "cpu" or workers > 1
    what = f"evaluation ({n} episodes together, up to {steps} steps each)"
    hint = "lower the episodes (--episodes, --eval_episodes) or the steps per episode (--max-steps, --eval_max_steps)"
    check_memory(n * ENV_BYTES + (buffers if on_host else 0), "cpu", what, hint)
    if not on_host:
        check_memory(buffers, device, what, hint)


def evaluate_reference(model, settings: EvalSettings) -> dict:
    """The naive path (one episode at a time, window rebuilt each step), for timing and checks."""
    return evaluate(model, settings.replace(batched=False))


def evaluate_run(model, info: RunInfo, device: str = "cpu", **changes) -> dict:
    """Evaluate a run's model with the settings its run record holds (``run_settings``), with
    ``changes`` (EvalSettings fields; None keeps the run's) on top; the dataset is never read."""
    return evaluate(model, run_settings(info, device, **changes))


def _rollout_here(model, env_id: str, plan: Plan, goal_fn: GoalFn, spec: RolloutSpec, batched: bool,
                  vector: str, progress: bool) -> Episodes:
    """The whole plan in this process: one vector env of len(plan), or the reference loop episode by episode."""
    env = make_vector_env(env_id, len(plan), vector) if batched else make_env(env_id)
    desc = f"eval {env_id} ({len(plan)} episodes{' together' if batched else ', one at a time'})"
    try:
        with tqdm(desc=desc, unit="step", disable=not progress, leave=False) as bar:
            if batched:
                return rollout_batched(model, env, plan, goal_fn, spec, progress=bar)
            one = [rollout_reference(model, env, target, goal_fn, spec, seed, progress=bar) for target, seed in plan]
    finally:
        env.close()
    success = [s for _, _, s in one]
    return Episodes(np.array([r for r, _, _ in one]), np.array([n for _, n, _ in one], dtype=np.int64),
                    None if success[0] is None else np.array(success, dtype=bool))  # fmt: skip
