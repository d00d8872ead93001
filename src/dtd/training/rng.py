"""The RNG states that make resume exact: every stream the training loop draws from, saved in each
checkpoint and restored on resume; and a guard that keeps evaluation from disturbing them."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np


# ---- RNG states (resume replays the same random numbers) ------------------------------------


def get_rng_state(sampler=None) -> dict[str, Any]:
    """Every RNG the training loop draws from: python, numpy, torch (CPU and CUDA), the sampler's."""
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if sampler is not None:
        state["sampler"] = sampler.get_state()
    return state


def set_rng_state(state: dict[str, Any], sampler=None) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if sampler is not None and "sampler" in state:
        sampler.set_state(state["sampler"])


@contextlib.contextmanager
def preserved_rng():
    """Run a block (evaluation) without disturbing the training RNG streams."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)
