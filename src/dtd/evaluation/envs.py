"""Simulator construction for evaluation, and the goal signals fed to a model during a rollout.

Environments are made by Gymnasium id (the MuJoCo v5 locomotion tasks; the gymnasium-robotics mazes
are registered on demand). A rollout runs N episodes together in one vector env. The goal a model is
conditioned on is a small object with ``reset``/``update`` so that other goal kinds (IQL value,
maze goals) plug into the same rollout loop.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from dtd.data.maze import is_maze_env, make_maze_eval_env
from dtd.data.refscores import env_key
from dtd.errors import DtdError

# The spec's evaluation targets (undiscounted episode returns), highest first.
TARGET_RETURNS: dict[str, tuple[float, ...]] = {
    "hopper": (3600.0, 1800.0),
    "halfcheetah": (12000.0, 6000.0),
    "walker2d": (5000.0, 2500.0),
}

# Measured on the 2-core CPU dev box, Hopper-v5, N=10, random actions: sync ~4900 env steps/s,
# async ~3500 (the worker processes' pipe traffic costs more than a MuJoCo step saves).
DEFAULT_VECTOR = "sync"


def target_returns(env_id: str) -> tuple[float, ...]:
    """The spec's target returns for an environment; DtdError when the spec gives none."""
    family = env_key(env_id)
    if family not in TARGET_RETURNS:
        known = ", ".join(sorted(TARGET_RETURNS))
        raise DtdError(f"{env_id}: no default target returns (known: {known}); pass targets explicitly")
    return TARGET_RETURNS[family]


def _ensure_registered(env_id: str) -> None:
    import gymnasium as gym

    if env_id in gym.registry:
        return
    try:  # the maze tasks live in gymnasium-robotics, which registers on import
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    except ImportError:
        pass
    if env_id not in gym.registry:
        raise DtdError(f"{env_id}: unknown Gymnasium environment id")


def make_env(env_id: str, **kwargs):
    """One Gymnasium environment by id (e.g. 'Hopper-v5'); unknown ids raise DtdError."""
    import gymnasium as gym

    _ensure_registered(env_id)
    if is_maze_env(env_id):  # episodic, flat maze-state observations (dtd.data.maze)
        return make_maze_eval_env(env_id, **kwargs)
    return gym.make(env_id, **kwargs)


def make_vector_env(env_id: str, num_envs: int, vector: str = DEFAULT_VECTOR, **kwargs):
    """N copies of an environment stepped together; ``vector`` is 'sync' (default here) or 'async'.

    Autoreset is Gymnasium's default (next step): a finished copy restarts on the following step,
    and the rollout simply ignores it from then on.
    """
    import gymnasium as gym

    _ensure_registered(env_id)
    fns = [lambda: make_env(env_id, **kwargs) for _ in range(num_envs)]
    if vector == "sync":
        return gym.vector.SyncVectorEnv(fns)
    if vector == "async":
        return gym.vector.AsyncVectorEnv(fns)
    raise DtdError(f"vector env: unknown kind {vector!r} (use 'sync' or 'async')")


class GoalFn(Protocol):
    """The goal signal of a rollout, for N episodes at once (arrays, no per-episode loops).

    ``reset`` gives the first goal from the target and the first observations; ``update`` gives the
    next goal after a step from the goal, the reward and the next observation. Goals are float64 here
    and cast to float32 when they enter the model window.
    """

    goal_dim: int

    def reset(self, target: float, obs: np.ndarray) -> np.ndarray:  # obs (N, S) -> (N, G)
        ...

    def update(self, goal: np.ndarray, reward: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        ...  # goal (N, G), reward (N,), next_obs (N, S) -> (N, G)


class ReturnToGo:
    """Return-to-go goal: starts at target/scale and falls by reward/scale each step.

    Delayed mode keeps it at target/scale for the whole episode. The delayed sampler moves an
    episode's whole return onto its last step, so every training window's return-to-go equals the
    episode return until that final step; the matching evaluation signal is the constant target
    (no reward is "collected" before the episode ends).
    """

    goal_dim = 1

    def __init__(self, reward_scale: float = 1000.0, delayed: bool = False):
        self.reward_scale = float(reward_scale)
        self.delayed = delayed

    def reset(self, target: float, obs: np.ndarray) -> np.ndarray:
        return np.full((len(obs), 1), target / self.reward_scale, dtype=np.float64)

    def update(self, goal: np.ndarray, reward: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        if self.delayed:
            return goal
        return goal - (np.asarray(reward, dtype=np.float64) / self.reward_scale)[:, None]

