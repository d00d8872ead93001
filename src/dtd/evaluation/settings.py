"""What an evaluation runs: the spec's target returns per task (and the settings of a rollout)."""

from __future__ import annotations

from dtd.data.refscores import env_key
from dtd.errors import DtdError

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
