"""What an evaluation runs: ``EvalSettings`` (one object for ``evaluate``), the settings a run's
record implies (``run_settings``, ``run_goal``), and the spec's target returns per task."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dtd.config import check_goal_targets
from dtd.data.refscores import env_key
from dtd.envs import DEFAULT_VECTOR
from dtd.errors import DtdError
from dtd.goals import GoalFn, ReturnToGo, make_goal_fn
from dtd.runs import RunInfo, load_critic

# The spec's evaluation targets (undiscounted episode returns), highest first.
TARGET_RETURNS: dict[str, tuple[float, ...]] = {
    "hopper": (3600.0, 1800.0),
    "halfcheetah": (12000.0, 6000.0),
    "walker2d": (5000.0, 2500.0),
}


def target_returns(env_id: str) -> tuple[float, ...]:
    """The spec's target returns for an environment; DtdError when the spec gives none."""
    family = env_key(env_id)
    if family not in TARGET_RETURNS:
        known = ", ".join(sorted(TARGET_RETURNS))
        raise DtdError(f"{env_id}: no default target returns (known: {known}); pass targets explicitly")
    return TARGET_RETURNS[family]


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """Everything an evaluation needs besides the model. Episode i of every target uses seed + i."""

    env_id: str
    state_mean: np.ndarray  # (S,) the training data's statistics
    state_std: np.ndarray  # (S,)
    targets: Sequence[float] | None = None  # target returns; None: the spec's for the task
    episodes: int = 10  # per target
    seed: int = 0
    reward_scale: float = 1000.0  # the default goal's (return-to-go) scale
    delayed: bool = False  # the default goal stays at target / scale (delayed-reward training)
    goal_fn: GoalFn | None = None  # None: return-to-go with reward_scale and delayed
    context_len: int = 20  # K
    max_ep_len: int = 1000  # the model's timestep limit (timesteps clipped to max_ep_len - 1)
    max_steps: int | None = None  # episode cap; None: max_ep_len
    ref_scores: tuple[float, float] | None = None  # (random, expert) returns; None: D4RL's for the task
    device: str = "cpu"
    batched: bool = True  # False: the one-episode-at-a-time reference path
    vector: str = DEFAULT_VECTOR  # sync | async vector env
    workers: int = 1  # forked CPU processes sharing the batched episodes
    progress: bool = True

    def replace(self, **changes) -> "EvalSettings":
        return dataclasses.replace(self, **changes)


def check_targets(targets: Sequence[float], goal_fn: GoalFn, what: str = "evaluation") -> None:
    """Targets whose goal tokens are finite float32 numbers (return-to-go: target / reward scale): an
    overflowing one makes the model's actions, and so the returns, NaN."""
    check_goal_targets(targets, goal_fn.reward_scale if isinstance(goal_fn, ReturnToGo) else 1.0, what)


def env_step_limit(env_id: str) -> int | None:
    """The environment's own episode limit (its TimeLimit), None when it has none or is not registered yet:
    an evaluation never needs more steps than that, so a larger --max-steps is clamped to it."""
    import gymnasium as gym

    try:
        return gym.spec(env_id).max_episode_steps
    except Exception:  # not registered (mazes register on make) or an unknown id: no clamp here
        return None


def run_goal(info: RunInfo, device: str = "cpu") -> GoalFn:
    """A run's goal object: return-to-go at the run's scale, the maze token, or the IQL critic's value."""
    critic = load_critic(info.config.critic, device) if info.goal == "iql" else None
    goal_fn = make_goal_fn(info.goal, info.state_mean, info.state_std, critic)
    return ReturnToGo(info.reward_scale, info.config.delayed) if goal_fn is None else goal_fn


def run_settings(info: RunInfo, device: str = "cpu", **changes) -> EvalSettings:
    """The settings a run's record implies (its environment, statistics, goal, reference returns,
    eval_* fields), with ``changes`` on top; the dataset is never read.

    Reference returns are the dataset's, as during training (D4RL's for the task when the dataset had
    none). A dtd 0.1 checkpoint recorded none: D4RL's are used, with a warning.
    """
    cfg = info.config
    if not info.env_id:
        raise DtdError(f"{info.dataset}: the dataset names no environment; set env_id in the run's config")
    if info.format == 1:
        warnings.warn(f"a dtd 0.1 checkpoint records no reference returns; normalized scores use D4RL's for "
                      f"{info.env_id}")
    settings = EvalSettings(
        env_id=info.env_id, state_mean=info.state_mean, state_std=info.state_std,
        targets=cfg.eval_targets or None, episodes=cfg.eval_episodes or 10, reward_scale=info.reward_scale,
        delayed=cfg.delayed, goal_fn=run_goal(info, device), context_len=info.context_len,
        max_ep_len=info.max_ep_len, max_steps=cfg.eval_max_steps or None, ref_scores=info.ref_scores,
        device=device,
    )  # fmt: skip
    return settings.replace(**{k: v for k, v in changes.items() if v is not None})
