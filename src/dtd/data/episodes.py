"""The one in-memory episode collection that every model, trainer and tool reads.

Loaders (dtd.data.loaders) turn files into an EpisodeDataset; the dataset validates itself on
construction, so a NaN or a length mismatch is reported once, naming the source, instead of
surfacing later as a NaN loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dtd.data import refscores
from dtd.errors import DtdError


@dataclass
class Episode:
    """One trajectory; step t holds the observation s_t, the action a_t taken there and r_t."""

    observations: np.ndarray  # (T, obs_dim) float32 (no final observation)
    actions: np.ndarray  # (T, act_dim) float32
    rewards: np.ndarray  # (T,) float32
    terminals: np.ndarray  # (T,) bool: the episode ended in a terminal state at t
    timeouts: np.ndarray  # (T,) bool: the episode was cut (time limit, budget) at t
    goals: np.ndarray | None = None  # (T, goal_dim) float32: per-step goal (maze goal xy, ...)
    infos: dict[str, np.ndarray] = field(default_factory=dict)  # per-step extras, each (T, ...)

    def __post_init__(self) -> None:
        self.observations = _as_2d(self.observations, np.float32)
        self.actions = _as_2d(self.actions, np.float32)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
        self.terminals = np.asarray(self.terminals, dtype=bool).reshape(-1)
        self.timeouts = np.asarray(self.timeouts, dtype=bool).reshape(-1)
        if self.goals is not None:
            self.goals = _as_2d(self.goals, np.float32)

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def ret(self) -> float:
        """Undiscounted return."""
        return float(self.rewards.sum(dtype=np.float64))

    def problem(self) -> str | None:
        """A description of what is wrong with this episode, or None when it is usable."""
        T = len(self.rewards)
        if T == 0:
            return "has no steps"
        arrays = {"observations": self.observations, "actions": self.actions,
                  "terminals": self.terminals, "timeouts": self.timeouts}
        if self.goals is not None:
            arrays["goals"] = self.goals
        arrays.update({f"infos/{k}": v for k, v in self.infos.items()})
        for name, arr in arrays.items():
            if len(arr) != T:
                return f"{name} has {len(arr)} steps but rewards has {T}"
        for name, arr in [("observations", self.observations), ("actions", self.actions),
                          ("rewards", self.rewards), ("goals", self.goals)]:
            if arr is not None and not np.isfinite(arr).all():
                return f"{name} contain NaN or inf"
        return None


def _as_2d(x: np.ndarray, dtype: type) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    return x.reshape(len(x), -1) if x.ndim != 2 else x


@dataclass
class EpisodeDataset:
    """A list of episodes plus what is needed to score them; validated on construction."""

    episodes: list[Episode]
    name: str  # the source string it was loaded from
    env_id: str | None = None  # Gymnasium id, e.g. "Hopper-v5"
    ref_min_score: float | None = None
    ref_max_score: float | None = None

    def __post_init__(self) -> None:
        if not self.episodes:
            raise DtdError(f"{self.name}: the dataset is empty (no episodes)")
        first = self.episodes[0]
        for i, ep in enumerate(self.episodes):
            problem = ep.problem()
            if problem is None and ep.observations.shape[1] != first.observations.shape[1]:
                problem = f"obs_dim {ep.observations.shape[1]} differs from episode 0's {self.obs_dim}"
            if problem is None and ep.actions.shape[1] != first.actions.shape[1]:
                problem = f"act_dim {ep.actions.shape[1]} differs from episode 0's {self.act_dim}"
            if problem is None and (ep.goals is None) != (first.goals is None):
                problem = "some episodes have goals and others do not"
            if problem is not None:
                raise DtdError(f"{self.name}: episode {i} {problem}")

    @property
    def obs_dim(self) -> int:
        return self.episodes[0].observations.shape[1]

    @property
    def act_dim(self) -> int:
        return self.episodes[0].actions.shape[1]

    @property
    def goal_dim(self) -> int | None:
        goals = self.episodes[0].goals
        return None if goals is None else goals.shape[1]

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_steps(self) -> int:
        return int(self.lengths().sum())

    def lengths(self) -> np.ndarray:
        """(N,) int64 episode lengths."""
        return np.array([len(ep) for ep in self.episodes], dtype=np.int64)

    def returns(self) -> np.ndarray:
        """(N,) float64 undiscounted episode returns."""
        return np.array([ep.ret for ep in self.episodes], dtype=np.float64)

    def state_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std + 1e-6) of the observations over all steps, each (obs_dim,) float32."""
        obs = np.concatenate([ep.observations for ep in self.episodes]).astype(np.float64)
        return obs.mean(0).astype(np.float32), (obs.std(0) + 1e-6).astype(np.float32)

    def reference_scores(self) -> tuple[float, float] | None:
        """(ref_min, ref_max): the dataset's own when it has them, else D4RL's for the env."""
        if self.ref_min_score is not None and self.ref_max_score is not None:
            return float(self.ref_min_score), float(self.ref_max_score)
        return refscores.ref_scores(self.env_id)

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray:
        """D4RL-normalized scores 100 * (R - ref_min) / (ref_max - ref_min)."""
        ref = self.reference_scores()
        if ref is None:
            raise DtdError(f"{self.name}: no reference scores for env {self.env_id!r}; "
                           "normalized scores need ref_min/ref_max")
        return refscores.normalize(returns, *ref)

    def __repr__(self) -> str:
        return (f"EpisodeDataset({self.name!r}, env={self.env_id}, episodes={self.num_episodes}, "
                f"steps={self.num_steps}, obs_dim={self.obs_dim}, act_dim={self.act_dim})")
