"""`dtd report`: compare runs across seeds — a markdown table and a learning-curve PNG.

Runs are grouped by (preset, dataset) from their config.yaml. A run's final score is its evaluation
JSON (``eval.json`` written at the end of training, else the newest ``eval-*.json`` from ``dtd eval``,
else the last evaluation logged in metrics.jsonl); the curve is every evaluation in metrics.jsonl.
Scores are D4RL normalized scores when the task has reference returns, raw returns otherwise. Spreads
are population std (ddof=0) over seeds, the same convention as over episodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dtd.errors import DtdError
from dtd.paths import check_output_dir, check_output_file, write_atomic, write_text_atomic

EVAL_FILE = "eval.json"
METRICS_FILE = "metrics.jsonl"


@dataclass
class RunScores:
    """What the report needs from one run folder."""

    path: Path
    preset: str
    dataset: str
    seed: int
    final: dict[str, float]  # target key -> score (mean over episodes)
    kind: str  # "normalized" or "return"
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, best-target score)

    @property
    def best(self) -> float:
        return max(self.final.values())


def result_scores(result: dict) -> tuple[dict[str, float], str]:
    """An evaluate() result, or the per-target scores the trainer logs -> ({target key: mean score}, kind)."""
    targets = result.get("targets", result)
    kind = "normalized" if all("normalized_mean" in t for t in targets.values()) else "return"
    return {k: float(t[f"{kind}_mean"]) for k, t in targets.items()}, kind


def _scores(result, where: str) -> tuple[dict[str, float], str]:
    """result_scores, with a malformed evaluation record as one DtdError naming where it came from."""
    try:
        scores, kind = result_scores(result)
    except (AttributeError, KeyError, TypeError, ValueError):
        raise DtdError(f"{where}: malformed evaluation record (expected per-target scores)") from None
    if not scores:
        raise DtdError(f"{where}: the evaluation record has no targets")
    return scores, kind


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DtdError(f"{path}: unreadable JSON ({exc})") from None


def _eval_results(line: dict) -> dict | None:
    """The evaluation logged in one metrics.jsonl line ({"step", "eval": {target: {..._mean}}}), if any."""
    value = line.get("eval")
    return value if isinstance(value, dict) and value else None


def load_run_scores(run_dir: str | Path) -> RunScores:
    """Read config.yaml, the final evaluation and the learning curve of one run folder."""
    import yaml

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise DtdError(f"{run}: not a dtd run folder (no config.yaml)")
    try:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DtdError(f"{run / 'config.yaml'}: unreadable ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise DtdError(f"{run / 'config.yaml'}: not a dtd config (a mapping of field: value)")
    curve, last = [], None
    if (run / METRICS_FILE).is_file():
        for number, raw in enumerate((run / METRICS_FILE).read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError too
                raise DtdError(f"{run / METRICS_FILE}:{number}: not a JSON line (UTF-8 text)") from None
            if not isinstance(line, dict):
                raise DtdError(f"{run / METRICS_FILE}:{number}: not a JSON object")
            if (result := _eval_results(line)) is not None:
                if not isinstance(line.get("step"), int) or isinstance(line.get("step"), bool):
                    raise DtdError(f"{run / METRICS_FILE}:{number}: an evaluation line without an integer step")
                scores, _ = _scores(result, f"{run / METRICS_FILE}:{number}")
                curve.append((int(line.get("step", 0)), max(scores.values())))
                last = result
    newest = sorted(run.glob("eval-*.json"), key=lambda p: p.stat().st_mtime)
    if (run / EVAL_FILE).is_file():
        last = _read_json(run / EVAL_FILE)
    elif newest:
        last = _read_json(newest[-1])
    if last is None:
        raise DtdError(f"{run}: no evaluation yet (no {EVAL_FILE}, eval-*.json or eval line in {METRICS_FILE})")
    final, kind = _scores(last, str(run))
    preset = config.get("preset") or config.get("model") or "run"
    return RunScores(run, str(preset), str(config.get("dataset", "?")), int(config.get("seed", 0)), final, kind, curve)


def group_runs(runs: Sequence[RunScores]) -> dict[tuple[str, str], list[RunScores]]:
    """(preset, dataset) -> its runs (the seeds), in first-seen order."""
    groups: dict[tuple[str, str], list[RunScores]] = {}
    for run in runs:
        groups.setdefault((run.preset, run.dataset), []).append(run)
    return groups


def _mean_std(values: Sequence[float]) -> str:
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def markdown_table(groups: dict[tuple[str, str], list[RunScores]]) -> str:
    """One row per group: seeds, best-target score and each target's score, mean ± std over seeds."""
    targets = sorted({k for runs in groups.values() for r in runs for k in r.final}, key=float, reverse=True)
    kinds = {r.kind for runs in groups.values() for r in runs}
    unit = "normalized score" if kinds == {"normalized"} else "score (normalized, or return where no reference)"
    head = ["preset", "dataset", "seeds", "best target"] + [f"target {t}" for t in targets]
    rows = [f"Final {unit}, mean ± std over seeds (std: ddof=0).", "", "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head)]  # fmt: skip
    for (preset, dataset), runs in groups.items():
        cells = [preset, dataset, str(len(runs)), _mean_std([r.best for r in runs])]
        for t in targets:
            have = [r.final[t] for r in runs if t in r.final]
            cells.append(_mean_std(have) if have else "—")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def plot_curves(groups: dict[tuple[str, str], list[RunScores]], path: Path) -> bool:
    """Best-target score vs step per group: mean line, ±std band over the steps all seeds share.

    Returns False (and writes nothing) when no run logged an evaluation during training.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    drawn = False
    for (preset, dataset), runs in groups.items():
        curves = [dict(r.curve) for r in runs if r.curve]
        if not curves:
            continue
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        if not steps:  # seeds evaluated at different steps: draw them one by one
            for r in runs:
                ax.plot(*zip(*r.curve), lw=1, alpha=0.7, label=f"{preset} · {dataset} · s{r.seed}")
            drawn = True
            continue
        values = np.array([[c[s] for s in steps] for c in curves])  # (seeds, steps)
        mean, std = values.mean(0), values.std(0)
        (line,) = ax.plot(steps, mean, lw=2, marker="o", ms=3, label=f"{preset} · {dataset} (n={len(curves)})")
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
        drawn = True
    if drawn:
        kinds = {r.kind for runs in groups.values() for r in runs}
        ax.set_xlabel("training step")
        ax.set_ylabel("D4RL normalized score" if kinds == {"normalized"} else "score")
        ax.set_title("Evaluation during training (best target; band: ±std over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        write_atomic(path, fig.savefig)
    plt.close(fig)
    return drawn


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write report.md (and curves.png when runs logged evaluations) into out_dir; returns the paths."""

    if not run_dirs:
        raise DtdError("report: no run folders given")
    out = check_output_dir(out_dir, "report --out")
    png, md = check_output_file(out / "curves.png", "report"), check_output_file(out / "report.md", "report")
    groups = group_runs([load_run_scores(d) for d in run_dirs])
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    text = "# dtd report\n\n" + markdown_table(groups)
    if plot_curves(groups, png):
        written["curves"] = png
        text += f"\n![learning curves]({png.name})\n"
    written["table"] = write_text_atomic(md, text)
    return written
