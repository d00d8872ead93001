"""Launch (or resume) every training run behind RESULTS.md, a few processes at a time.

    MINARI_DATASETS_PATH=../shared/datasets .venv/bin/python experiments/run_results.py [--workers 2]

Each run is a plain `dtd train --config PRESET` with the CPU budget below as overrides, written to
runs/results/<group>/<name>-s<seed>. The script is idempotent: a run with eval.json is done and skipped,
a run with a checkpoint is continued with `dtd train --resume`, anything else starts fresh (a folder
without a checkpoint is restarted with --force). Kill it at any time and start it again.

Runs are ordered so that a partial sweep is still useful: the main table (seed 0, 1, 2), then the ablation,
then the longer sample-efficiency runs.
`--list` prints the commands without running them. Tables and figures: experiments/make_results.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "results"

# The CPU budget shared by every run of a comparison (RESULTS.md "Budget"): the paper's optimiser and
# schedule shape, but 400 steps at batch 64 with a short warm-up and a larger learning rate, which is
# what a 2-core CPU affords for 63 runs. 10 evaluation episodes per target at the end.
BUDGET = ["--steps", "400", "--batch_size", "64", "--lr", "0.001", "--warmup_steps", "40",
          "--ckpt_every", "100", "--eval_every", "0", "--eval_episodes", "10", "--max_minutes", "0",
          "--eval_untrained", "false", "--log_every", "20"]
# Sample efficiency: the hopper medium-replay DTd and DT-small runs also evaluate every 100 steps, and
# seed 0 of each is trained further (1,000 steps, evaluated every 200) after everything else, and so are
# DTd and DT-small on halfcheetah medium-replay (where DTd had not left its mean action at 400 steps).
CURVE = ["--eval_every", "100", "--eval_untrained", "true"]
LONG_CURVE = ["--steps", "1000", "--eval_every", "200", "--eval_untrained", "true"]
LONG_SEEDS = [0]

MODELS = ["dtd", "dt-small", "dt-large", "bc"]
MAIN = ["hopper-medium", "hopper-medium-replay", "hopper-medium-expert", "halfcheetah-medium-replay"]
ABLATIONS = ["bias-b0", "bias-left", "bias-right", "combiner-c21", "combiner-c23"]  # all / c22 = main table
SEEDS = [0, 1, 2]


@dataclass
class Job:
    group: str  # main | ablation
    name: str
    preset: str
    seed: int
    extra: tuple[str, ...] = ()
    root: Path = OUT

    @property
    def run_dir(self) -> Path:
        return self.root / self.group / f"{self.name}-s{self.seed}"

    def command(self, dtd: str) -> list[str]:
        if (self.run_dir / "checkpoints" / "last.pt").is_file():
            return [dtd, "train", "--resume", str(self.run_dir), "--no-progress"]
        return [dtd, "train", "--config", self.preset, *BUDGET, *self.extra, "--seed", str(self.seed),
                "--threads", "1", "--out_dir", str(self.run_dir.parent), "--run_name", self.run_dir.name,
                "--force", "--no-progress"]


def jobs(root: Path = OUT) -> list[Job]:
    main, ablation = [], []
    for seed in SEEDS:
        for data in MAIN:
            for model in MODELS:
                curve = CURVE if data == "hopper-medium-replay" and model in ("dtd", "dt-small") else []
                main.append(Job("main", f"{data}-{model}", f"{data}-{model}", seed, tuple(curve), root))
        for abl in ABLATIONS:
            ablation.append(Job("ablation", f"hopper-medium-replay-{abl}", f"ablation/hopper-medium-replay-{abl}",
                                seed, (), root))
    long = [Job("curve", f"{data}-{model}-long", f"{data}-{model}", seed, tuple(LONG_CURVE), root)
            for data in ("hopper-medium-replay", "halfcheetah-medium-replay") for seed in LONG_SEEDS
            for model in ("dtd", "dt-small")]
    return main + ablation + long


def run_job(job: Job, dtd: str, index: int, total: int) -> tuple[Job, int, float]:
    if (job.run_dir / "eval.json").is_file():
        return job, 0, 0.0
    cmd = job.command(dtd)
    log = job.root / "logs" / f"{job.group}-{job.run_dir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.time()
    print(f"[{index}/{total}] start {job.group}/{job.run_dir.name}", flush=True)
    with open(log, "a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    took = time.time() - start
    print(f"[{index}/{total}] {'done' if code == 0 else f'FAILED ({code})'} {job.run_dir.name} in {took:.0f} s",
          flush=True)
    return job, code, took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one torch thread each (default 2)")
    parser.add_argument("--list", action="store_true", help="print the commands and exit")
    parser.add_argument("--runs", default=str(OUT), help="where the run folders go (default runs/results)")
    parser.add_argument("--only", default="", help="run only jobs whose folder name contains this text")
    args = parser.parse_args()
    dtd = str(Path(sys.executable).with_name("dtd"))
    todo = [j for j in jobs(Path(args.runs).resolve()) if args.only in f"{j.group}/{j.run_dir.name}"]
    if args.list:
        for job in todo:
            print(" ".join(job.command("dtd")))
        return 0
    if not os.environ.get("MINARI_DATASETS_PATH"):
        print("run_results: set MINARI_DATASETS_PATH to the folder holding zoo/hopper/... (../shared/datasets)",
              file=sys.stderr)
        return 2
    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(lambda ij: run_job(ij[1], dtd, ij[0] + 1, len(todo)), enumerate(todo)))
    failed = [j.run_dir.name for j, code, _ in results if code]
    print(f"{len(results) - len(failed)} runs done, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
