"""Where and at which code a job ran: the commit, the last commit that changed src/, and the machine.

A record names these so that a number in a table can be traced to the code that made it and compared only
with numbers from the same kind of machine (throughput depends on it)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

from dtd.bench.common import cpu_model

# A copy of the tree (a cluster node, a GPU box given the files only) names the commit it was copied from in
# DTD_COMMIT (and DTD_CODE, the last commit that changed src/; default DTD_COMMIT); these win over git, whose
# history there may be missing or another checkout's.
FROM_ENV = ("DTD_COMMIT", "DTD_CODE")


def code_root() -> Path:
    """The checkout dtd runs from (an editable install: the repository holding src/dtd), else the cwd."""
    repo = Path(__file__).resolve().parents[3]
    return repo if (repo / "src" / "dtd").is_dir() else Path.cwd()


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()
    except OSError:  # no git on this machine
        return ""


def _dirty(root: Path) -> str:
    return "+dirty" if _git(root, "status", "--porcelain", "--untracked-files=no", "--", "src") else ""


def commit(root: Path) -> str:
    """The commit the code runs at (with '+dirty' when tracked files under src/ differ from it)."""
    if os.environ.get(FROM_ENV[0]):
        return os.environ[FROM_ENV[0]]
    head = _git(root, "rev-parse", "HEAD") or _installed()
    return head + _dirty(root)


def code_commit(root: Path) -> str:
    """The last commit that changed what a run trains (src/, presets included), '+dirty' if they differ from it:
    unlike HEAD it stays put while record commits land, so runs of the same code name one commit."""
    if os.environ.get(FROM_ENV[0]):
        return os.environ.get(FROM_ENV[1]) or os.environ[FROM_ENV[0]]
    last = _git(root, "log", "-1", "--format=%H", "--", "src") or _installed()
    return last + _dirty(root)


def _installed() -> str:
    """No git history here: a pip-installed dtd is named by its version."""
    try:
        return "decision-transducer " + importlib.metadata.version("decision-transducer")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def machine() -> str:
    """The CPU and core count (and GPU, where there is one: `dtd train` then trains on it) a run trained on."""
    try:
        torch = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch = "?"
    try:
        gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        gpus = []
    gpu = next((f", {g.strip()}" for g in gpus if g.strip()), "")
    return f"{cpu_model()}, {os.cpu_count()} cores{gpu}, torch {torch}"


def version(root: Path) -> dict[str, str]:
    return {"commit": commit(root), "code": code_commit(root), "machine": machine()}
