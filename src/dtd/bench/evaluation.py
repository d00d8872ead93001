"""Inference and evaluation throughput: the sampler, batched ``act`` latency, the vector env alone and
evaluation batched vs one episode at a time vs split over worker processes."""

from __future__ import annotations

import time

import numpy as np

from dtd.bench.common import AUTHORS_EVAL_STEPS_PER_S, BenchConfig, PeakRSS, build_preset, median_time, random_batch

def synthetic_dataset(cfg: BenchConfig, episodes: int = 50, length: int = 400, seed: int = 0):
    """Random episodes with the benchmark's dimensions: the sampler's cost needs no real data."""
    from dtd.data.episodes import Episode, EpisodeDataset

    rng = np.random.default_rng(seed)
    eps = []
    for _ in range(episodes):
        t = int(rng.integers(length // 2, length + 1))
        done = np.zeros(t, dtype=bool)
        done[-1] = True
        eps.append(Episode(rng.standard_normal((t, cfg.state_dim)).astype(np.float32),
                           rng.uniform(-1, 1, (t, cfg.act_dim)).astype(np.float32),
                           rng.random(t).astype(np.float32), done, np.zeros(t, dtype=bool)))  # fmt: skip
    return EpisodeDataset(eps, name="synthetic", env_id=cfg.env_id)


def bench_sampler(cfg: BenchConfig, sampler, batch_size: int = 256) -> dict:
    sec = median_time(lambda: sampler.sample(batch_size), max(cfg.steps * 3, 5))
    return {"batch_size": batch_size, "context_len": cfg.context_len, "ms_per_batch": sec * 1e3,
            "samples_per_s": batch_size / sec}  # fmt: skip


def bench_inference(cfg: BenchConfig, preset: str = "dtd") -> dict:
    """Latency of one batched ``act`` call (eval mode, full windows) for 1 and N windows."""
    import torch

    torch.manual_seed(0)
    model = build_preset(cfg, preset).eval()
    out = {"preset": preset}
    for n in sorted({1, cfg.episodes}):
        b = random_batch(cfg, n)
        lengths = torch.full((n,), cfg.context_len)
        args = (b["states"], b["actions"], b["goals"], b["timesteps"], lengths)
        with torch.inference_mode():
            sec = median_time(lambda: model.act(*args), max(cfg.steps * 3, 5), warmup=2, sync=cfg.sync)
        out[f"n{n}"] = {"ms_per_call": sec * 1e3, "windows_per_s": n / sec}
    return out


# ---------------------------------------------------------------- evaluation


def bench_env_steps(cfg: BenchConfig, n: int, steps: int = 200) -> dict:
    """The limit evaluation approaches: a vector env of n stepped with random actions, no model."""
    from dtd.evaluation.envs import make_vector_env

    env = make_vector_env(cfg.env_id, n)
    try:
        env.reset(seed=0)
        env.action_space.seed(0)
        acts = [env.action_space.sample() for _ in range(steps)]
        t0 = time.perf_counter()
        for a in acts:
            env.step(a)
        sec = time.perf_counter() - t0
    finally:
        env.close()
    return {"num_envs": n, "env_steps_per_s": n * steps / sec}


def bench_eval(cfg: BenchConfig, preset: str = "dtd") -> dict:
    """Evaluation env steps/s: batched (sync vector env, one model call per step; also over an async
    vector env and split over worker processes) vs the reference loop.

    With ``cfg.run`` the run's trained model is evaluated with its checkpoint's settings (full-length
    episodes, the realistic case); otherwise an untrained ``preset`` (same per-step model cost, but
    Hopper episodes end after a few dozen steps, so resets weigh more). Both paths run the same
    seeds, so their returns must match exactly.
    """
    import torch

    from dtd.evaluation.rollout import evaluate, evaluate_run

    target = 3600.0
    if cfg.run:
        from dtd.training.checkpoint import load_run

        model, ckpt = load_run(cfg.run, map_location=cfg.device)
        preset = ckpt["model_name"]
        env_id = (ckpt.get("config") or {}).get("env_id") or cfg.env_id
        targets = list((ckpt.get("config") or {}).get("eval_targets") or [target])[:1]
        target = float(targets[0])

        def run_eval(n: int, batched: bool, workers: int = 1, vector: str = "sync") -> dict:
            return evaluate_run(model, ckpt, episodes=n, targets=targets, seed=0, progress=False, device=cfg.device,
                                batched=batched, max_steps=cfg.eval_max_steps, workers=workers,
                                vector=vector)  # fmt: skip
    else:
        torch.manual_seed(0)
        model, env_id = build_preset(cfg, preset).eval(), cfg.env_id
        common = dict(targets=[target], seed=0, state_mean=np.zeros(cfg.state_dim, np.float32),
                      state_std=np.ones(cfg.state_dim, np.float32), context_len=cfg.context_len,
                      max_ep_len=cfg.max_ep_len, max_steps=cfg.eval_max_steps, progress=False,
                      device=cfg.device)  # fmt: skip

        def run_eval(n: int, batched: bool, workers: int = 1, vector: str = "sync") -> dict:
            return evaluate(model, env_id, episodes=n, batched=batched, workers=workers, vector=vector, **common)

    key = f"{target:g}"
    out: dict = {"env_id": env_id, "preset": preset, "run": cfg.run, "max_steps": cfg.eval_max_steps}
    for n in sorted({1, cfg.episodes}):
        row = {}
        paths = [("batched", True, 1, "sync")] + ([("reference", False, 1, "sync")] if cfg.naive else [])
        if n > 1:  # the same batched loop over an async vector env (one subprocess per env)
            paths.append(("async", True, 1, "async"))
        if n > 1 and cfg.eval_workers > 1 and cfg.device == "cpu":  # forked workers run on the CPU
            paths.append(("workers", True, cfg.eval_workers, "sync"))
        for name, batched, workers, vector in paths:
            with PeakRSS() as mem:  # the parent's memory: workers share its pages until they write
                res = run_eval(n, batched, workers, vector)
            row[name] = {"env_steps": res["env_steps"], "seconds": res["seconds"],
                         "env_steps_per_s": res["env_steps_per_s"], "memory": mem.result(),
                         "returns": res["targets"][key]["returns"],
                         "mean_length": float(np.mean(res["targets"][key]["lengths"])),
                         "workers": res["workers"]}  # fmt: skip
        if cfg.naive:
            diff = np.abs(np.subtract(row["batched"]["returns"], row["reference"]["returns"]))
            row["returns_identical"] = bool(np.all(diff == 0))
            row["returns_max_abs_diff"] = float(diff.max())
            row["speedup_vs_reference"] = row["batched"]["env_steps_per_s"] / row["reference"]["env_steps_per_s"]
        for path in ("async", "workers"):
            if path in row:
                diff = np.abs(np.subtract(row[path]["returns"], row["batched"]["returns"]))
                row[f"{path}_returns_identical"] = bool(np.all(diff == 0))
                row[f"{path}_returns_max_abs_diff"] = float(diff.max())
        if "workers" in row and cfg.naive:
            row["workers_speedup_vs_reference"] = row["workers"]["env_steps_per_s"] / row["reference"]["env_steps_per_s"]
        row["env_only"] = bench_env_steps(cfg, n, steps=max(cfg.eval_max_steps, 10))
        out[f"n{n}"] = row
    n = cfg.episodes
    if cfg.naive:  # the headline: N episodes together vs the same N one at a time
        out["speedup_n_vs_one_at_a_time"] = out[f"n{n}"]["speedup_vs_reference"]
    if not cfg.tiny:
        row = out[f"n{n}"]
        best = max(row[p]["env_steps_per_s"] for p in ("batched", "workers") if p in row)
        out["speedup_vs_authors"] = best / AUTHORS_EVAL_STEPS_PER_S  # the faster of 1 and W processes
    return out
