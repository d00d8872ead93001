"""SequenceSampler: training windows of K steps, built with array ops (spec "data semantics").

Every per-step quantity lives in one flat array over all kept steps (episode after episode);
a batch is one fancy-index of a (B, K) grid of flat indices, so sampling costs no Python loop
over the batch. Extra per-step targets (e.g. maze waypoints) plug in with `add_key`.
"""

from __future__ import annotations

import numpy as np

from dtd.data.episodes import Episode, EpisodeDataset
from dtd.errors import DtdError


def reward_to_go(rewards: np.ndarray) -> np.ndarray:
    """(T,) -> (T,) undiscounted sum of rewards from t to the end of the episode."""
    return np.cumsum(rewards[::-1], dtype=np.float64)[::-1]


def top_episodes(dataset: EpisodeDataset, pct_traj: float) -> np.ndarray:
    """Indices of the highest-return episodes whose steps fill pct_traj of the dataset's steps.

    Episodes are added best-first while their total length stays within the budget (at least one),
    so %BC with pct_traj=0.1 trains on the top 10% of timesteps. Order: best first.
    """
    if not 0.0 < pct_traj <= 1.0:
        raise DtdError(f"pct_traj: must be in (0, 1], got {pct_traj}")
    lengths = dataset.lengths()
    order = np.argsort(-dataset.returns(), kind="stable")
    budget = max(int(pct_traj * lengths.sum()), 1)
    cum = np.cumsum(lengths[order])
    n = max(int(np.searchsorted(cum, budget, side="right")), 1)
    return order[:n]


class SequenceSampler:
    """Random right-padded windows of K steps with normalised states and return-to-go goals.

    goal="rtg": goals = reward-to-go / reward_scale (G=1); with `delayed` the whole return sits
    at the last step, so the return-to-go is the full return at every step.
    goal="episode": goals = the episodes' own per-step goals (maze goal xy, IQL values, ...).
    """

    def __init__(self, dataset: EpisodeDataset, context_len: int = 20, reward_scale: float = 1000.0,
                 pct_traj: float = 1.0, delayed: bool = False, max_ep_len: int = 1000, seed: int = 0,
                 state_mean: np.ndarray | None = None, state_std: np.ndarray | None = None,
                 goal: str = "rtg"):
        if goal not in ("rtg", "episode"):
            raise DtdError(f"goal: unknown goal type {goal!r} (expected rtg or episode)")
        if goal == "episode" and dataset.goal_dim is None:
            raise DtdError(f"{dataset.name}: goal='episode' needs per-step goals, the dataset has none")
        if context_len < 1:
            raise DtdError(f"context_len: must be >= 1, got {context_len}")
        self.context_len, self.reward_scale, self.max_ep_len = context_len, reward_scale, max_ep_len
        self.delayed, self.goal = delayed, goal
        if state_mean is None or state_std is None:
            state_mean, state_std = dataset.state_stats()
        self.state_mean = np.asarray(state_mean, np.float32)  # (S,)
        self.state_std = np.asarray(state_std, np.float32)  # (S,)

        keep = top_episodes(dataset, pct_traj)
        self.episodes: list[Episode] = [dataset.episodes[i] for i in keep]
        self.lengths = np.array([len(ep) for ep in self.episodes], dtype=np.int64)  # (N,)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])  # (N,) first flat index
        self.probs = self.lengths / self.lengths.sum()  # length-weighted episode choice
        self.rng = np.random.default_rng(seed)

        # flat per-step arrays, (num_steps, ...): the only thing `sample` reads
        self.arrays: dict[str, np.ndarray] = {}
        states = self._flat([ep.observations for ep in self.episodes])
        self.arrays["states"] = ((states - self.state_mean) / self.state_std).astype(np.float32)
        self.arrays["actions"] = self._flat([ep.actions for ep in self.episodes])
        if goal == "rtg":
            rtg = [reward_to_go(self._goal_rewards(ep)) / reward_scale for ep in self.episodes]
            self.arrays["goals"] = self._flat(rtg)[:, None].astype(np.float32)  # (num_steps, 1)
        else:
            self.arrays["goals"] = self._flat([ep.goals for ep in self.episodes])
        self.step_in_episode = self._flat([np.arange(n) for n in self.lengths]).astype(np.int64)

    def _goal_rewards(self, ep: Episode) -> np.ndarray:
        if not self.delayed:
            return ep.rewards
        delayed = np.zeros_like(ep.rewards, dtype=np.float64)
        delayed[-1] = ep.rewards.sum(dtype=np.float64)
        return delayed

    @staticmethod
    def _flat(per_episode: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(per_episode, axis=0)

    def add_key(self, name: str, per_episode: list[np.ndarray]) -> None:
        """Sample an extra per-step array too: one (T_i, ...) array per kept episode (self.episodes)."""
        if len(per_episode) != len(self.episodes) or any(
                len(x) != n for x, n in zip(per_episode, self.lengths)):
            raise ValueError(f"add_key({name!r}): need one array per kept episode with matching length")
        self.arrays[name] = self._flat([np.asarray(x) for x in per_episode])

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """states (B,K,S), actions (B,K,A), goals (B,K,G), timesteps (B,K) int64, mask (B,K) float32,
        plus every `add_key` array (B,K,...); padded positions are zero. ``rng``: draw from it instead
        of the sampler's own stream (a fixed held-out batch that leaves training's batches unchanged)."""
        K = self.context_len
        rng = self.rng if rng is None else rng
        ep = rng.choice(len(self.lengths), size=batch_size, p=self.probs)  # (B,)
        start = (rng.random(batch_size) * self.lengths[ep]).astype(np.int64)  # (B,) in [0, len-1]
        pos = start[:, None] + np.arange(K)[None, :]  # (B,K) step within the episode
        valid = pos < self.lengths[ep][:, None]  # (B,K) right padding after the episode's end
        flat = np.where(valid, self.offsets[ep][:, None] + pos, 0)  # (B,K) flat index (0 where padded)
        batch = {}
        for name, arr in self.arrays.items():
            x = arr[flat]  # (B,K,...) a fresh copy
            x[~valid] = 0
            batch[name] = x
        batch["timesteps"] = np.where(valid, np.minimum(pos, self.max_ep_len - 1), 0).astype(np.int64)
        batch["mask"] = valid.astype(np.float32)
        return batch

    def get_state(self) -> dict:
        """The RNG state (for checkpoints); restoring it replays the same batches."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
