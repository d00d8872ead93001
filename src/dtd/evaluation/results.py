"""The results schema of an evaluation: per-target episode outcomes and their JSON summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dtd.data.refscores import normalize, ref_scores


@dataclass
class Episodes:
    """Outcome of N episodes for one target."""

    returns: np.ndarray  # (N,) float64, undiscounted
    lengths: np.ndarray  # (N,) int64
    success: np.ndarray | None  # (N,) bool, when the env reports info["success"] (mazes)


def concat(parts: Sequence[Episodes]) -> Episodes:
    """Episodes of consecutive slices of a plan, joined in order (success only if every part has it)."""
    success = None if any(e.success is None for e in parts) else np.concatenate([e.success for e in parts])
    return Episodes(np.concatenate([e.returns for e in parts]), np.concatenate([e.lengths for e in parts]), success)


def take(eps: Episodes, a: int, b: int) -> Episodes:
    return Episodes(eps.returns[a:b], eps.lengths[a:b], None if eps.success is None else eps.success[a:b])


def reference_scores(env_id: str, given: tuple[float, float] | None) -> tuple[float, float] | None:
    """(random, expert) returns for the normalized score: the given ones, else D4RL's for the task."""
    if given is not None:
        return float(given[0]), float(given[1])
    return ref_scores(env_id)


def summarize(target: float, eps: Episodes, ref: tuple[float, float] | None) -> dict:
    """JSON-ready per-target results: raw lists plus mean and std (population std, ddof=0)."""
    out = {
        "target": float(target),
        "returns": [float(r) for r in eps.returns],
        "lengths": [int(n) for n in eps.lengths],
        "return_mean": float(np.mean(eps.returns)),
        "return_std": float(np.std(eps.returns)),
        "length_mean": float(np.mean(eps.lengths)),
    }
    if ref is not None:
        scores = normalize(eps.returns, *ref)
        out.update(
            normalized=[float(s) for s in scores],
            normalized_mean=float(np.mean(scores)),
            normalized_std=float(np.std(scores)),
        )
    if eps.success is not None:
        out["success_rate"] = float(np.mean(eps.success))
    return out


def target_key(target: float) -> str:
    """3600.0 -> '3600': the JSON key of a target."""
    return f"{target:g}"
