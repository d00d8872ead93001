"""Optional experiment trackers beside metrics.jsonl and TensorBoard: Weights & Biases (`dtd train --wandb`).

A tracker sees exactly the records metrics.jsonl gets (the trainer's logger hands each line to it), so the two
never disagree. The wandb run's id is kept in the run folder (wandb.json): a resumed run continues the same
wandb run, and a sweep's runs share one group. WANDB_MODE=offline works with no network (`wandb sync` later).
Needs `pip install "decision-transducer[wandb]"`; tracking never changes what is trained."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import secrets
from pathlib import Path
from typing import Any

from dtd.errors import DtdError
from dtd.paths import write_text_atomic

WANDB_FILE = "wandb.json"
MISSING = '--wandb needs Weights & Biases: pip install "decision-transducer[wandb]"'


def flatten(record: dict[str, Any]) -> dict[str, float]:
    """One metrics.jsonl line -> wandb keys (TensorBoard's names: train/loss, eval/<target>/<key>, probe/<key>)."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "step":
            continue
        if key == "eval":
            out.update({f"eval/{t}/{k}": v for t, scores in value.items() for k, v in scores.items()})
        elif key == "probe":
            out.update({f"probe/{k}": v for k, v in value.items()})
        else:
            out[f"train/{key}"] = value
    return out


def tracked(run_dir: str | Path) -> bool:
    """Whether a run folder logs to wandb (its resume then continues the same wandb run)."""
    run = Path(run_dir)
    return ((run.parent.parent if run.is_file() else run) / WANDB_FILE).is_file()


@dataclasses.dataclass
class Wandb:
    """A tracker factory for the trainer: Wandb(project, group)(run_dir, cfg, start) -> an open wandb run.
    A run folder's wandb.json wins over the arguments (the run keeps its project, group and id)."""
    project: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:  # before any work, not after the dataset has loaded
        if importlib.util.find_spec("wandb") is None:
            raise DtdError(MISSING)

    def __call__(self, run_dir: Path, cfg: Any, start: int) -> "WandbRun":
        import wandb
        path = Path(run_dir) / WANDB_FILE
        saved = json.loads(path.read_text()) if path.is_file() else {}
        if not saved.get("id") or not (saved.get("project") or self.project):
            saved = {"project": self.project, "group": self.group, "id": secrets.token_hex(4)}  # wandb ids: [a-z0-9]
        if not saved["project"]:
            raise DtdError("--wandb needs a project name")
        write_text_atomic(path, json.dumps(saved, indent=1) + "\n")
        run = wandb.init(project=saved["project"], group=saved.get("group"), id=saved["id"], resume="allow",
                         name=Path(run_dir).name, job_type="train", dir=str(run_dir),
                         config=dataclasses.asdict(cfg), settings=wandb.Settings(console="off"))
        return WandbRun(run)


class WandbRun:
    def __init__(self, run: Any):
        self.run = run

    def log(self, record: dict[str, Any]) -> None:
        self.run.log(flatten(record), step=int(record["step"]))

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)
