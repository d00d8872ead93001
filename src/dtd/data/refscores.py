"""D4RL reference returns and the normalized score 100 * (R - random) / (expert - random).

Scores are comparable across papers only on this scale, so every tool reports it. A dataset's own
ref_min/ref_max (Minari metadata) win over these constants; see EpisodeDataset.normalized_score.
"""

from __future__ import annotations

import re

import numpy as np

# env key -> (random policy return, expert return), as published with D4RL. Mazes report
# success rate (sparse reward 1 at the goal), so 0..1 maps to 0..100.
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
}

# env key -> the Gymnasium id of the environment the scores refer to (used to name datasets
# whose files do not store an env id, e.g. D4RL hdf5 "hopper-medium-v2.hdf5").
GYM_IDS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}


def env_key(env_id: str | None) -> str | None:
    """'Hopper-v5' / 'hopper' / 'hopper-medium-v2' / 'AntMaze_UMaze-v5' -> 'hopper' / ... / 'antmaze'."""
    if not env_id:
        return None
    name = env_id.split("/")[-1].lower()
    name = re.sub(r"-v\d+$", "", name)
    for sep in ("_", "-"):
        name = name.split(sep)[0]
    return name if name in D4RL_REF_SCORES else None


def ref_scores(env_id: str | None) -> tuple[float, float] | None:
    """D4RL (random, expert) returns for an env id, or None when D4RL has none for it."""
    key = env_key(env_id)
    return D4RL_REF_SCORES.get(key) if key else None


def normalize(returns: np.ndarray | float, ref_min: float, ref_max: float) -> np.ndarray:
    """100 * (R - ref_min) / (ref_max - ref_min), elementwise."""
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)
