"""Goals: the token a sequence model is conditioned on, at training time and online.

Each goal kind has two halves that must agree: a training-time writer (the per-step tokens the
sampler reads) and an online updater (a ``GoalFn``: reset from the target and the first
observations, update after every step), used by evaluation and ``dtd.Policy``.

- ``rtg``: return-to-go / reward_scale. The sampler computes it (dtd.data.sampler); ``ReturnToGo``
  starts at target / scale and falls by each reward / scale (constant in delayed mode).
- ``maze``: token = concat(normalised xy now, normalised goal xy) (G = 4). xy is state[:2] and the
  goal xy state[-2:] in the maze state layout (dtd.data.maze); both are normalised with the
  dataset's xy mean/std, so the token needs nothing beyond the run's state statistics.
  Waypoint target at t = normalised xy at min(t + waypoint, T - 1).
- ``iql``: token = (large - V(s)) / (large - small) clipped to [0, 1] (G = 1) with an IQL critic
  (dtd.models.iql.ValueCritic, loaded by dtd.runs.load_critic); online, the first token is 1, the
  next ones come from the critic.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from dtd.data.episodes import Episode, EpisodeDataset
from dtd.errors import DtdError

GOAL_KINDS = ("rtg", "maze", "iql")


def maze_tokens(obs: np.ndarray, state_mean: np.ndarray, state_std: np.ndarray) -> np.ndarray:
    """(..., S) raw maze states -> (..., 4) [xy, goal xy], each normalised with the xy statistics."""
    mean, std = np.asarray(state_mean)[:2], np.asarray(state_std)[:2]
    xy = (obs[..., :2] - mean) / std
    goal = (obs[..., -2:] - mean) / std
    return np.concatenate([xy, goal], axis=-1).astype(np.float32)


def waypoint_targets(obs: np.ndarray, state_mean: np.ndarray, state_std: np.ndarray, ahead: int = 3) -> np.ndarray:
    """(T, S) raw states of one episode -> (T, 2) normalised xy ``ahead`` steps later (clipped at T-1)."""
    if ahead < 1:
        raise DtdError(f"waypoint: must be >= 1 step ahead, got {ahead}")
    idx = np.minimum(np.arange(len(obs)) + ahead, len(obs) - 1)
    return ((obs[idx, :2] - np.asarray(state_mean)[:2]) / np.asarray(state_std)[:2]).astype(np.float32)


def with_goals(dataset, kind: str, state_mean: np.ndarray, state_std: np.ndarray, critic=None):
    """A copy of ``dataset`` whose Episode.goals are the goal tokens of ``kind`` (maze or iql), for
    SequenceSampler(goal="episode"); rtg returns the dataset as it is."""
    if kind == "rtg":
        return dataset
    if kind == "maze":
        if dataset.goal_dim is None:
            raise DtdError(f"{dataset.name}: goal 'maze' needs a maze dataset (PointMaze/AntMaze, D4RL maze2d/antmaze)")
        tokens = [maze_tokens(ep.observations, state_mean, state_std) for ep in dataset.episodes]
    elif kind == "iql":
        if critic is None:
            raise DtdError("goal 'iql': no critic given (set `critic:` to a `dtd iql train` run or checkpoint)")
        tokens = [critic.goal_tokens(ep.observations)[:, None] for ep in dataset.episodes]
    else:
        raise DtdError(f"goal: unknown goal {kind!r} (choose from {', '.join(GOAL_KINDS)})")
    episodes = [Episode(ep.observations, ep.actions, ep.rewards, ep.terminals, ep.timeouts, g, ep.infos)
                for ep, g in zip(dataset.episodes, tokens)]
    return EpisodeDataset(episodes, dataset.name, dataset.env_id, dataset.ref_min_score, dataset.ref_max_score)


def add_waypoints(sampler, ahead: int = 3) -> None:
    """Add the ``waypoints`` (B, K, 2) key to a SequenceSampler's batches (its kept episodes)."""
    sampler.add_key("waypoints", [waypoint_targets(ep.observations, sampler.state_mean, sampler.state_std, ahead)
                                  for ep in sampler.episodes])


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


class MazeGoal:
    """GoalFn for mazes: the token is recomputed from every observation (goal xy is in the state)."""

    goal_dim = 4

    def __init__(self, state_mean: np.ndarray, state_std: np.ndarray):
        self.mean, self.std = np.asarray(state_mean, np.float64), np.asarray(state_std, np.float64)

    def reset(self, target: float, obs: np.ndarray) -> np.ndarray:  # obs (N, S) -> (N, 4)
        return maze_tokens(obs, self.mean, self.std).astype(np.float64)

    def update(self, goal: np.ndarray, reward: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        return maze_tokens(next_obs, self.mean, self.std).astype(np.float64)


class ValueGoal:
    """GoalFn for the IQL value goal: 1 at the first step, then the critic's scaled value."""

    goal_dim = 1

    def __init__(self, critic):
        self.critic = critic

    def reset(self, target: float, obs: np.ndarray) -> np.ndarray:
        return np.ones((len(obs), 1))

    def update(self, goal: np.ndarray, reward: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
        return self.critic.goal_tokens(next_obs)[:, None]


def check_kind(kind: str) -> str:
    if kind not in GOAL_KINDS:
        raise DtdError(f"goal: unknown goal {kind!r} (choose from {', '.join(GOAL_KINDS)})")
    return kind


def make_goal_fn(kind: str, state_mean: np.ndarray, state_std: np.ndarray, critic=None):
    """The evaluation GoalFn for ``kind``; None for rtg (evaluate() then uses its ReturnToGo)."""
    check_kind(kind)
    if kind == "maze":
        return MazeGoal(state_mean, state_std)
    if kind == "iql":
        if critic is None:
            raise DtdError("goal 'iql': no critic given (set `critic:` to a `dtd iql train` run or checkpoint)")
        return ValueGoal(critic)
    return None
