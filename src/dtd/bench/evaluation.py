"""Inference and evaluation throughput: the sampler, batched ``act`` latency per N, the vector env alone
and the evaluation curve over N (batched, split over worker processes, one episode at a time)."""

from __future__ import annotations

import time

import numpy as np

from dtd.bench.common import BenchConfig, PeakRSS, build_preset, median_time, random_batch

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


def bench_inference(cfg: BenchConfig, preset: str = "dtd", ceiling_gflops: float | None = None) -> dict:
    """Latency of one batched ``act`` call (eval mode, full windows) for each N of the evaluation curve,
    and its FLOPs per window: N / latency is what the model alone allows evaluation with N episodes."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = build_preset(cfg, preset).eval()

    def call(n: int, act=model.act):
        b = random_batch(cfg, n)
        lengths = torch.full((n,), cfg.context_len, device=b["states"].device)
        args = (b["states"], b["actions"], b["goals"], b["timesteps"], lengths)
        return lambda: act(*args)

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        call(1, model._act)()  # the model's own work: on a GPU `act` pads every call to CUDA_ACT_WINDOWS windows
    flops = int(counter.get_total_flops())  # per window: act's products run row by row (batch-invariant)
    out: dict = {"preset": preset, "flops_per_window": flops}
    for n in sorted(set(cfg.eval_episodes)):
        with torch.inference_mode():
            sec = median_time(call(n), max(cfg.steps * 3, 5), warmup=2, sync=cfg.sync)
        out[f"n{n}"] = {"ms_per_call": sec * 1e3, "windows_per_s": n / sec, "gflops": n * flops / sec / 1e9}
        if ceiling_gflops:
            out[f"n{n}"]["fraction_of_matmul_ceiling"] = n * flops / sec / 1e9 / ceiling_gflops
    return out


# ---------------------------------------------------------------- evaluation


def bench_env_steps(cfg: BenchConfig, n: int, steps: int = 200) -> dict:
    """The limit evaluation approaches: a vector env of n stepped with random actions, no model."""
    from dtd.envs import make_vector_env

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


ASYNC_MAX_ENVS = 10  # the async vector env forks a process per episode: timed up to this N only


def bench_eval(cfg: BenchConfig, preset: str = "dtd") -> dict:
    """The evaluation curve: env steps/s with N episodes together, for each N in ``cfg.eval_episodes``
    (one sync vector env and one model call per step; also split over worker processes, and over an
    async vector env for small N), beside the vector env alone (the simulator's limit).

    Every N's episodes start with seeds 0, 1, ..., so the first ones are the same episodes for every
    N: the one-at-a-time reference path runs ``cfg.reference_episodes`` of them once, and each N's
    first min(N, reference_episodes) returns must equal them exactly (``reference_checked`` says how
    many were compared). With ``cfg.run`` the run's trained model is evaluated with its checkpoint's
    settings at its first target (full-length episodes, the realistic case); otherwise an untrained
    ``preset`` (same per-step model cost, but Hopper episodes end after a few dozen steps, so resets
    weigh more).
    """
    import torch

    from dtd.evaluation import EvalSettings, evaluate, evaluate_run

    target = 3600.0
    if cfg.run:
        from dtd.runs import load_run

        model, info = load_run(cfg.run, map_location=cfg.device)
        preset = info.model_name
        env_id = info.env_id or cfg.env_id
        target = float((info.config.eval_targets or [target])[0])

        def run_eval(n: int, batched: bool, workers: int = 1, vector: str = "sync") -> dict:
            return evaluate_run(model, info, cfg.device, episodes=n, targets=[target], seed=0, progress=False,
                                batched=batched, max_steps=cfg.eval_max_steps, workers=workers,
                                vector=vector)  # fmt: skip
    else:
        torch.manual_seed(0)
        model, env_id = build_preset(cfg, preset).eval(), cfg.env_id
        common = EvalSettings(env_id=env_id, targets=[target], seed=0, state_mean=np.zeros(cfg.state_dim, np.float32),
                              state_std=np.ones(cfg.state_dim, np.float32), context_len=cfg.context_len,
                              max_ep_len=cfg.max_ep_len, max_steps=cfg.eval_max_steps, progress=False,
                              device=cfg.device)  # fmt: skip

        def run_eval(n: int, batched: bool, workers: int = 1, vector: str = "sync") -> dict:
            return evaluate(model, common.replace(episodes=n, batched=batched, workers=workers, vector=vector))

    key = f"{target:g}"

    def timed(n: int, batched: bool, workers: int = 1, vector: str = "sync") -> dict:
        with PeakRSS() as mem:  # the parent's memory: workers share its pages until they write
            res = run_eval(n, batched, workers, vector)
        return {"episodes": n, "env_steps": res["env_steps"], "seconds": res["seconds"],
                "env_steps_per_s": res["env_steps_per_s"], "memory": mem.result(),
                "returns": res["targets"][key]["returns"], "mean_length": float(np.mean(res["targets"][key]["lengths"])),
                "workers": res["workers"]}  # fmt: skip

    ns = sorted(set(cfg.eval_episodes))
    out: dict = {"env_id": env_id, "preset": preset, "run": cfg.run, "target": target, "max_steps": cfg.eval_max_steps,
                 "episodes": ns}  # fmt: skip
    ref = None
    if cfg.naive:  # one at a time: the first episodes every N shares
        ref = out["reference"] = timed(min(cfg.reference_episodes, max(ns)), batched=False)
    checks = []
    for n in ns:
        row = {"batched": timed(n, True)}
        if 1 < n <= ASYNC_MAX_ENVS:
            row["async"] = timed(n, True, vector="async")
        if n > 1 and cfg.eval_workers > 1 and cfg.device == "cpu":  # forked workers run on the CPU
            row["workers"] = timed(n, True, workers=cfg.eval_workers)
        if ref is not None:
            k = min(n, ref["episodes"])
            diff = np.abs(np.subtract(row["batched"]["returns"][:k], ref["returns"][:k]))
            row["reference_checked"] = k
            row["returns_identical"] = bool(np.all(diff == 0))
            row["returns_max_abs_diff"] = float(diff.max())
            row["speedup_vs_reference"] = row["batched"]["env_steps_per_s"] / ref["env_steps_per_s"]
            checks.append(row["returns_identical"])
        for path in ("async", "workers"):
            if path in row:
                diff = np.abs(np.subtract(row[path]["returns"], row["batched"]["returns"]))
                row[f"{path}_returns_identical"] = bool(np.all(diff == 0))
                row[f"{path}_returns_max_abs_diff"] = float(diff.max())
                checks.append(row[f"{path}_returns_identical"])
        row["best_env_steps_per_s"] = max(row[p]["env_steps_per_s"] for p in ("batched", "workers") if p in row)
        row["env_only"] = bench_env_steps(cfg, n, steps=max(10, min(cfg.eval_max_steps, 200)))
        out[f"n{n}"] = row
    out["all_returns_identical"] = all(checks) if checks else None
    return out
