"""Checkpoints and run folders: atomic save, load, load_run, and the RNG states that make resume exact.

A checkpoint is one dict (docs/design.md "Runs"): model, model_name, model_kwargs, state_mean,
state_std, reward_scale, config, optimizer, scheduler, rng, step. It is written to a temporary
file and renamed into place, so a kill mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from dtd.errors import DtdError

CKPT_DIR = "checkpoints"
LAST = "last.pt"
CONFIG_FILE = "config.yaml"


def new_run_dir(path: str | Path, force: bool, hint: str = "use --force to overwrite") -> Path:
    """Create an empty run folder with its checkpoints/; an existing one is an error unless `force`."""
    import shutil

    path = Path(path)
    if path.exists():
        if not force:
            raise DtdError(f"{path}: run folder exists ({hint})")
        shutil.rmtree(path)
    (path / CKPT_DIR).mkdir(parents=True)
    return path


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """torch.save to path + '.tmp', then os.replace: readers never see a half-written file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """A checkpoint written by save_checkpoint; missing or unreadable files raise DtdError.

    Checkpoints hold numpy arrays and RNG states, so they are unpickled in full: load only your own.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise DtdError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated zip, random bytes, pickle errors all surface differently
        raise DtdError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    missing = [k for k in ("model", "model_name", "model_kwargs", "step") if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise DtdError(f"{path}: not a dtd checkpoint (missing {', '.join(missing)})")
    return ckpt


def find_checkpoint(run_dir: str | Path) -> Path:
    """run_dir/checkpoints/last.pt, or a checkpoint file itself; DtdError for a folder that is not a run."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise DtdError(f"{run_dir}: no such run folder")
    if not (run_dir / CONFIG_FILE).is_file():
        raise DtdError(f"{run_dir}: not a dtd run folder (no {CONFIG_FILE})")
    path = run_dir / CKPT_DIR / LAST
    if not path.is_file():
        raise DtdError(f"{run_dir}: run has no checkpoint yet ({CKPT_DIR}/{LAST} missing)")
    return path


def load_run(run_dir: str | Path, map_location: str = "cpu"):
    """(model in eval mode, checkpoint dict) of a run folder's last checkpoint (or a checkpoint path)."""
    from dtd.models import rebuild_model

    path = find_checkpoint(run_dir)
    ckpt = load_checkpoint(path, map_location)
    model = rebuild_model(ckpt["model_name"], ckpt["model_kwargs"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise DtdError(f"{path}: weights do not fit {ckpt['model_name']} ({exc})") from None
    return model.eval(), ckpt


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
