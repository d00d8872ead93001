"""An established library's Decision Transformer on the diagnosis grid: is dtd's DT-small as strong as it?

The issue behind the diagnosis asks that the baselines be as strong as an established library's, or the
comparison flatters DTd. This trains d3rlpy's DecisionTransformer (d3rlpy 2.8.1, used as its own examples use
it) on the same Minari datasets, at the same budget and learning rates as the diagnosis grid, and evaluates it
the same way: 1,000 steps x batch 64, evaluated at 500 and 1,000 steps (32k and 64k samples) with 10 episodes at
each of the presets' two targets. d3rlpy pins gymnasium 1.0.0, so it lives in a venv of its own:

    python3 -m venv .venv-d3rlpy
    .venv-d3rlpy/bin/pip install torch==2.13.0 d3rlpy==2.8.1 "gymnasium[mujoco]==1.0.0" minari==0.5.4
    MINARI_DATASETS_PATH=../shared/datasets .venv-d3rlpy/bin/python experiments/reference_dt.py [--lr 1e-3 3e-4]

What is the library's and what is ours. d3rlpy's: the model (GPT-2 style, 3 layers, 1 head, H 128, linear
embeddings, its timestep embedding), its trajectory sampler, its standard observation scaler, its warm-up
(linear, then constant), its AdamW and clipping, its stateful evaluation wrapper. Ours, to match the grid:
the budget, the learning rates, weight decay 1e-4, clip 0.25, dropout 0.1, K 20, returns-to-go scaled by 1/1000
(the presets' `reward_scale`), 100 warm-up steps, the targets and 10 episodes each. Each finished run writes one
JSON of raw episode returns (temporary name, then rename) to results/diagnosis/reference-d3rlpy/; runs with a
record are skipped. Scores are normalised by experiments/make_diagnosis.py with dtd's reference returns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "results" / "diagnosis" / "reference-d3rlpy"
# The presets' values (src/dtd/presets/base/*.yaml; tests/test_reference_dt.py checks they agree)
DATASETS = {
    "halfcheetah-medium-replay": {"minari": "zoo/halfcheetah/medium-replay-v0", "env": "HalfCheetah-v5",
                                  "targets": [12000, 6000]},
    "hopper-medium-replay": {"minari": "zoo/hopper/medium-replay-v0", "env": "Hopper-v5", "targets": [3600, 1800]},
}
BUDGET = {"steps": 1000, "batch_size": 64, "warmup_steps": 100, "eval_at": [500, 1000], "episodes": 10,
          "context": 20, "weight_decay": 1e-4, "clip": 0.25, "dropout": 0.1, "reward_scale": 1000.0}


def load(name: str):
    """The Minari dataset as d3rlpy's MDPDataset: episodes end in a termination or a timeout."""
    import minari
    import numpy as np
    from d3rlpy.dataset import MDPDataset

    obs, act, rew, term, timeout = [], [], [], [], []
    for ep in minari.load_dataset(DATASETS[name]["minari"]).iterate_episodes():
        n = len(ep.actions)
        obs.append(ep.observations[:n])
        act.append(ep.actions)
        rew.append(ep.rewards)
        ended = np.zeros(n, dtype=np.float32)
        ended[-1] = 1.0
        term.append(ended * bool(ep.terminations[-1]))
        timeout.append(ended * (not ep.terminations[-1]))
    cat = lambda xs: np.concatenate(xs).astype(np.float32)  # noqa: E731
    return MDPDataset(cat(obs), cat(act), cat(rew), cat(term), cat(timeout))


def evaluate(algo, env_id: str, target: float, episodes: int, seed: int) -> list[float]:
    """Undiscounted returns of `episodes` episodes, one at a time, through d3rlpy's stateful wrapper."""
    import gymnasium as gym

    env, returns = gym.make(env_id), []
    for i in range(episodes):
        policy = algo.as_stateful_wrapper(target_return=target)
        obs, _ = env.reset(seed=10_000 * seed + i)
        reward, total, done = 0.0, 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy.predict(obs, reward))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


def run(name: str, lr: float, seed: int, out: Path) -> None:
    import d3rlpy
    import torch

    torch.set_num_threads(1)
    d3rlpy.seed(seed)
    spec, b = DATASETS[name], BUDGET
    algo = d3rlpy.algos.DecisionTransformerConfig(
        batch_size=b["batch_size"], learning_rate=lr, context_size=b["context"], max_timestep=1000,
        num_heads=1, num_layers=3, attn_dropout=b["dropout"], resid_dropout=b["dropout"], embed_dropout=b["dropout"],
        encoder_factory=d3rlpy.models.VectorEncoderFactory([128], exclude_last_activation=True),
        observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
        reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(1.0 / b["reward_scale"]),
        optim_factory=d3rlpy.optimizers.AdamWFactory(
            weight_decay=b["weight_decay"], clip_grad_norm=b["clip"],
            lr_scheduler_factory=d3rlpy.optimizers.WarmupSchedulerFactory(warmup_steps=b["warmup_steps"])),
    ).create(device="cpu:0")
    evals: dict[str, dict[str, list[float]]] = {}
    start = time.time()

    def at_step(algo, epoch: int, step: int) -> None:
        if step in b["eval_at"]:
            evals[str(step * b["batch_size"])] = {
                str(t): evaluate(algo, spec["env"], t, b["episodes"], seed) for t in spec["targets"]}
            print(f"  {name} lr {lr:g} seed {seed}: {step} steps, mean returns "
                  + ", ".join(f"{t}: {sum(r) / len(r):.0f}" for t, r in evals[str(step * b['batch_size'])].items()),
                  flush=True)

    algo.fit(load(name), n_steps=b["steps"], n_steps_per_epoch=b["steps"], show_progress=False,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory(), callback=at_step)
    record = {"dataset": name, "env": spec["env"], "lr": lr, "seed": seed, "budget": b, "returns": evals,
              "library": f"d3rlpy {d3rlpy.__version__}", "torch": torch.__version__,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 thread",
              "wall_s": round(time.time() - start, 1)}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.rename(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--lr", nargs="+", default=["1e-3", "3e-4", "1e-4"], help="learning rates (the diagnosis grid's)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for lr in args.lr:  # the grid's rates in order, each with every seed: a partial set still compares n=2
        for seed in args.seeds:
            for name in args.datasets:
                out = args.out / f"{name}-lr{lr}-s{seed}.json"
                if out.is_file():
                    continue
                print(f"start {out.stem}", flush=True)
                run(name, float(lr), seed, out)


if __name__ == "__main__":
    main()
