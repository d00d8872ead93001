"""The paper's comparison at ten times RESULTS.md's old budget, as learning curves (issue #15).

    MINARI_DATASETS_PATH=../shared/datasets .venv/bin/python experiments/study.py [--workers 2] [--list]
        [--only TEXT] [--commit-records]

Every run: its model's recipe below (256,000 samples: 4,000 steps x batch 64; lr 1e-3 for DT-small and
DT-large, 3e-4 with the head initialised at 0.1x for DTd, 1e-4 for BC; linear warm-up over the first 10%
of the steps then the spec's decay), AdamW wd 1e-4, clip 0.25, dropout 0.1, K 20; evaluated every 32,000
samples (500 steps) with 10 episodes at each of the spec's two targets, so every run is a learning curve.
Models: DTd (the faithful default), DT-small, DT-large (re-sized to DTd) and BC; datasets: hopper and
halfcheetah medium, medium-replay and medium-expert; seeds 0, 1, 2. Then the DTd ablation on hopper
medium-replay (bias b0 / left / right, combiner c21 / c23; bias all and c22 are the main grid's DTd runs) and
the attention of the seed-0 hopper-medium DT-small and DTd runs (and, first, each dataset's own mean score:
seconds). Records land in results/study/
(experiments/runner.py: idempotent, resumes from checkpoints, one record per finished run, each naming the
commit it ran at); RESULTS.md: experiments/make_results.py.

Order, so that whatever is finished when work stops is a useful grid (one worker-hour is about one DTd or
DT-small run; DT-large is about twice that, BC minutes):
  1. seed 0 of DTd, DT-small and BC on every dataset, hopper first, plus DT-large on hopper; the attention step
     as soon as the hopper-medium DTd and DT-small seed-0 runs are in (their checkpoints are then on this machine);
  2. seed 1 of the same: every row then has a DTd - DT-small difference (n=2);
  3. the ablation, seeds 0 and 1 (its bias-all / c22 row is the main grid's DTd, already there);
  4. seed 2 of the same main rows: the significance column at n=3;
  5. the ablation's seed 2;
  6. DT-large on halfcheetah, seeds 0-2: the issue allows DT-large to cover hopper only if compute runs out,
     and this is the costliest part (about 2 worker-hours a run), so it goes last.
Within a dataset DTd and DT-small are adjacent, so the two workers train a row's pair side by side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runner import Job, main

# The training recipe: each model's best complete cell of the diagnosis (RESULTS.md "Diagnosis", the table
# "Each model's best complete cell"; results/diagnosis/). RECIPE for every model, MODEL_RECIPE for a model's
# departures from it (keys of RECIPE, or "model_opts": `--model_opts` items). DT-large, not in the diagnosis,
# takes DT-small's. Samples per run are fixed; the steps follow from the batch, evaluations come every
# EVAL_SAMPLES. Re-check against that table before the grid starts: changing it makes finished records stale.
RECIPE = {"lr": "1e-3", "batch_size": 64, "warmup_fraction": 0.1, "samples": 256_000}  # DT-small's best cell
MODEL_RECIPE: dict[str, dict] = {
    "dtd": {"lr": "3e-4", "model_opts": ["head_init_scale=0.1"]},  # DTd, head init x0.1
    "bc": {"lr": "1e-4"},  # BC, lr 1e-4
}
EVAL_SAMPLES = 32_000  # every 500 steps at batch 64
CKPT_SAMPLES = EVAL_SAMPLES  # checkpoints at the evaluations: <= ~6 min lost to a kill, ~200 MB per run kept
COMMON = ("--weight_decay", "1e-4", "--grad_clip", "0.25", "--dropout", "0.1", "--context_len", "20",
          "--eval_episodes", "10", "--eval_untrained", "false", "--max_minutes", "0", "--threads", "1")

MODELS = ("dtd", "dt-small", "dt-large", "bc")
DATASETS = ("hopper-medium", "hopper-medium-replay", "hopper-medium-expert",
            "halfcheetah-medium", "halfcheetah-medium-replay", "halfcheetah-medium-expert")
SEEDS = (0, 1, 2)
ABLATION_DATASET = "hopper-medium-replay"
ABLATIONS = ("bias-b0", "bias-left", "bias-right", "combiner-c21", "combiner-c23")  # all / c22 = the main DTd
ATTENTION = {"dataset": "hopper-medium", "seed": 0, "models": ("dt-small", "dtd"), "windows": 256}


def recipe(model: str) -> dict:
    """The recipe one model trains with: RECIPE with that model's departures."""
    return {**RECIPE, **MODEL_RECIPE.get(model, {})}


def budget(recipe: dict = RECIPE) -> tuple[str, ...]:
    """The command-line overrides a model's runs share (the presets carry the model and the dataset)."""
    batch = int(recipe["batch_size"])
    steps = recipe["samples"] // batch
    opts = ("--model_opts", *recipe["model_opts"]) if recipe.get("model_opts") else ()
    return ("--lr", str(recipe["lr"]), "--batch_size", str(batch), "--steps", str(steps),
            "--warmup_steps", str(round(steps * recipe["warmup_fraction"])),
            "--eval_every", str(EVAL_SAMPLES // batch), "--ckpt_every", str(CKPT_SAMPLES // batch),
            "--log_every", str(max(1, 3_200 // batch)), *opts, *COMMON)


def train_job(group: str, dataset: str, model: str, seed: int, variant: str = "") -> Job:
    preset = f"ablation/{dataset}-{variant}" if variant else f"{dataset}-{model}"
    name = f"{dataset}-{variant or model}-s{seed}"
    tags = {"group": group, "dataset": dataset, "model": model, "variant": variant or "default", "seed": str(seed)}
    return Job(name, ("--config", preset, *budget(recipe(model)), "--seed", str(seed)), tags)


def attention_name() -> str:
    return f"attention-{ATTENTION['dataset']}-s{ATTENTION['seed']}"


def attention_step(runs: Path, out: Path) -> list[str]:
    """The attention summaries (`dtd attention RUN --windows 256`, windows from the run's own dataset) of the
    seed-0 DT-small and DTd runs, as <model>.json; the checkpoints must be on this machine."""
    import torch

    from dtd.analysis import attention as att

    torch.set_num_threads(1)
    cmds = []
    for model in ATTENTION["models"]:
        run = runs / f"{ATTENTION['dataset']}-{model}-s{ATTENTION['seed']}"
        if not (run / "checkpoints" / "last.pt").is_file():
            raise FileNotFoundError(f"{run}: no checkpoint on this machine; remove its record in results/study/ "
                                    "and run the study again to retrain it, then this step runs")
        _, summary = att.analyze_run(run, windows=ATTENTION["windows"], progress=False)
        (out / f"{model}.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
        cmds.append(f"dtd attention {run.name} --windows {ATTENTION['windows']}")
    return cmds


def datasets_step(runs: Path, out: Path) -> list[str]:
    """Each dataset's own mean D4RL-normalized episode return (the reference column of the main table)."""
    import numpy as np
    import yaml

    from dtd.data.loaders import load_dataset
    from dtd.config import resolve_preset

    means = {}
    for key in DATASETS:
        source = yaml.safe_load(resolve_preset(f"{key}-dtd").read_text())["dataset"]
        data = load_dataset(source)
        means[key] = {"source": source, "episodes": len(data.returns()),
                      "mean_normalized": float(np.mean(data.normalized_score(data.returns())))}
    (out / "means.json").write_text(json.dumps(means, indent=1, sort_keys=True) + "\n")
    return ["dtd.data.loaders.load_dataset(source).normalized_score(returns).mean() per dataset"]


def jobs() -> list[Job]:
    """Every job once, in run order (the docstring says why)."""
    def main_rows(seed: int, models: tuple[str, ...], datasets: tuple[str, ...] = DATASETS) -> list[Job]:
        return [train_job("main", d, m, seed) for d in datasets for m in models
                if m != "dt-large" or d.startswith("hopper")]

    def ablation(seeds: tuple[int, ...]) -> list[Job]:
        return [train_job("ablation", ABLATION_DATASET, "dtd", s, v) for s in seeds for v in ABLATIONS]

    core = ("dtd", "dt-small", "bc", "dt-large")
    seed0 = main_rows(0, core)
    needs = tuple(f"{ATTENTION['dataset']}-{m}-s{ATTENTION['seed']}" for m in ATTENTION["models"])
    attention = Job(attention_name(), (), {"group": "attention", "dataset": ATTENTION["dataset"],
                                           "seed": str(ATTENTION["seed"])}, step=attention_step, needs=needs)
    after = max(i for i, j in enumerate(seed0) if j.name in needs) + 1
    seed0.insert(after, attention)
    halfcheetah_large = [train_job("main", d, "dt-large", s) for s in SEEDS for d in DATASETS
                         if d.startswith("halfcheetah")]
    datasets = Job("datasets", (), {"group": "datasets"}, step=datasets_step)
    return [datasets, *seed0, *main_rows(1, core), *ablation((0, 1)), *main_rows(2, core), *ablation((2,)), *halfcheetah_large]


if __name__ == "__main__":
    sys.exit(main(__doc__, jobs(), "study"))
