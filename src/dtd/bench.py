"""`dtd bench`: training and evaluation throughput on this machine, with the naive paths timed beside
the fast ones in the same process, so every run reports its speed-ups as measured ratios.

Sections of the result (all JSON-ready):
- ``machine``: CPU, cores, torch version, threads, git commit, date, load average before/after;
- ``matmul``: this CPU's fp32 matrix-product rate (a large ``torch.mm`` and one of the model's shapes);
- ``train``: per preset and batch size, one AdamW step + grad clip on random tensors of the batch's
  shape, median over timed steps after warm-up; the fast path (fused SDPA, the trainer's fused AdamW, grads
  set to None) and the reference path (explicit masks and attention weights, per-tensor AdamW, zeroed grads);
  model FLOPs per step (FlopCounterMode) and the fraction of the matmul ceiling reached;
- ``profile``: where a training step's time goes (sampling, forward, backward, clip, optimiser, and
  per-op-category self time from torch.profiler: attention, matmul, norm, optimiser, other ops, Python);
- ``sampler``: the cost of one training batch from ``SequenceSampler``;
- ``inference``: latency of one batched ``act`` call for 1 and N windows;
- ``eval``: env steps/s of evaluation for 1 and N environments, batched vector-env path vs the
  reference path of ``dtd.evaluation.rollout`` (one episode at a time, window rebuilt every step),
  the N episodes split over ``eval_workers`` processes, the raw vector-env step rate (the limit),
  and whether every path gave identical returns;
- ``memory``: peak resident memory during a training run and during an evaluation, and its growth;
- ``train[i]["ddp"]`` (``--ddp N``): the same step data-parallel over N one-thread gloo processes.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dtd.errors import DtdError

# Small model sizes for --tiny (tests, smoke runs): same code paths, a fraction of the work.
TINY_OVERRIDES = {
    "dtd": dict(hidden_size=16, n_layer=1, ff_dim=32, join_ff_dim=32),
    "dt-small": dict(hidden_size=16, n_layer=1),
    "dt-large": dict(hidden_size=16, n_layer=1, n_head=2),
    "bc": dict(hidden_size=16, n_layer=1),
}
# torch.profiler op name fragments -> category of the profile breakdown (first match wins)
OP_CATEGORIES = (
    ("layernorm", ("layer_norm",)),
    ("attention", ("scaled_dot_product", "attention", "softmax", "bmm", "masked_fill", "tril", "eye")),
    ("optimizer", ("_foreach", "adamw", "lerp", "addcdiv", "addcmul", "vector_norm", "clamp_min", "sqrt")),
    ("matmul", ("addmm", "mm", "matmul", "linear")),
)
# the authors' code on this kind of machine (issue #7): default DTd, samples/s per batch size
AUTHORS_SAMPLES_PER_S = {64: 130.0, 256: 139.0}
AUTHORS_EVAL_STEPS_PER_S = 70.0


@dataclass
class BenchConfig:
    presets: list[str] = field(default_factory=lambda: ["dtd", "dt-small"])
    batch_sizes: list[int] = field(default_factory=lambda: [64, 256])
    steps: int = 10  # timed training steps per (preset, batch size), after `warmup`
    warmup: int = 3
    episodes: int = 10  # N environments evaluated together
    eval_max_steps: int = 200  # cap per evaluation episode
    env_id: str = "Hopper-v5"
    state_dim: int = 11  # Hopper's; the random-tensor training benchmark needs no dataset
    act_dim: int = 3
    context_len: int = 20
    max_ep_len: int = 1000
    threads: int | None = None  # torch threads; None keeps torch's default
    run: str | None = None  # a trained run folder: evaluation uses its model (full-length episodes)
    naive: bool = True  # also time the reference paths (the speed-up ratios)
    eval_workers: int = 2  # also time evaluation with the N episodes split over this many processes (1: skip)
    ddp: int = 0  # also time data-parallel training: this many processes, 1 thread each, batch split
    tiny: bool = False  # tiny models (TINY_OVERRIDES), for tests

    @classmethod
    def tiny_config(cls, **kw) -> "BenchConfig":
        base = dict(batch_sizes=[4], steps=2, warmup=1, episodes=2, eval_max_steps=8, max_ep_len=50,
                    context_len=5, tiny=True)  # fmt: skip
        return cls(**{**base, **kw})

    def overrides(self, preset: str) -> dict:
        return dict(TINY_OVERRIDES.get(preset, {})) if self.tiny else {}


# ---------------------------------------------------------------- machine and memory


def machine_info() -> dict:
    """What the figures were measured on."""
    import torch

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)  # fmt: skip
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _rss_mb() -> float:
    """Current resident memory (Linux /proc); elsewhere the process peak (getrusage) stands in."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return _maxrss_mb()


def _maxrss_mb() -> float:
    """Peak resident memory of the whole process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 2**10


class PeakRSS:
    """Peak resident memory inside a ``with`` block: a thread samples RSS every few ms.

    (ru_maxrss only ever grows over the whole process, so it cannot tell one phase from another.)
    """

    def __init__(self, interval: float = 0.005):
        self.interval, self.start_mb, self.peak_mb, self.end_mb = interval, 0.0, 0.0, 0.0
        self._stop = threading.Event()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __enter__(self) -> "PeakRSS":
        self.start_mb = self.peak_mb = _rss_mb()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end_mb = _rss_mb()
        self.peak_mb = max(self.peak_mb, self.end_mb)

    def result(self) -> dict:
        return {"start_mb": round(self.start_mb, 1), "peak_mb": round(self.peak_mb, 1),
                "end_mb": round(self.end_mb, 1), "growth_mb": round(self.end_mb - self.start_mb, 1)}  # fmt: skip


def _median_time(fn, reps: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(reps, 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------- matmul ceiling


def matmul_ceiling(n: int = 1024, rows: int = 5120, dim: int = 128, reps: int = 5) -> dict:
    """fp32 GFLOP/s of this CPU: one large square ``torch.mm`` and one of the models' shapes
    ((B*K, H) x (H, 2H) at batch 256, K 20, H 128)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    x, w = torch.randn(rows, dim), torch.randn(dim, 2 * dim)
    square = _median_time(lambda: torch.mm(a, b), reps)
    shaped = _median_time(lambda: torch.mm(x, w), reps * 4)
    return {
        "square_n": n,
        "square_gflops": 2 * n**3 / square / 1e9,
        "model_shape": [rows, dim, 2 * dim],
        "model_shape_gflops": 2 * rows * dim * 2 * dim / shaped / 1e9,
    }


# ---------------------------------------------------------------- training


def _random_batch(cfg: BenchConfig, batch_size: int, goal_dim: int = 1, seed: int = 0) -> dict:
    """Random tensors with a training batch's shapes (every window full: the worst case)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b, k = batch_size, cfg.context_len
    return {
        "states": torch.randn(b, k, cfg.state_dim, generator=g),  # (B, K, S)
        "actions": torch.rand(b, k, cfg.act_dim, generator=g) * 2 - 1,  # (B, K, A)
        "goals": torch.randn(b, k, goal_dim, generator=g),  # (B, K, G)
        "timesteps": torch.randint(0, cfg.max_ep_len, (b, k), generator=g),  # (B, K)
        "mask": torch.ones(b, k),  # (B, K)
    }


def _build(cfg: BenchConfig, preset: str):
    from dtd.models import build_model

    return build_model(preset, cfg.state_dim, cfg.act_dim, 1, cfg.max_ep_len, cfg.context_len,
                       **cfg.overrides(preset))  # fmt: skip


class TrainStep:
    """One optimiser step as the trainer takes it (masked MSE, AdamW, clip 0.25), fast or reference.

    reference: the attention with explicit masks and spelled-out weights (``return_attention=True``),
    per-tensor AdamW (foreach=False) and gradients zeroed in place: the unoptimised way.
    """

    def __init__(self, model, reference: bool = False, grad_clip: float = 0.25):
        import torch

        from dtd.training.schedule import make_optimizer
        from dtd.training.trainer import masked_mse

        self.model, self.reference, self.grad_clip, self.loss_fn = model.train(), reference, grad_clip, masked_mse
        if reference:
            self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, foreach=False)
        else:
            self.opt = make_optimizer(model.parameters(), 1e-4, 1e-4, str(next(model.parameters()).device))

    def forward(self, batch: dict):
        out = self.model(batch["states"], batch["actions"], batch["goals"], batch["timesteps"],
                         mask=batch["mask"], return_attention=self.reference)  # fmt: skip
        return self.loss_fn(out.actions, batch["actions"], batch["mask"])

    def __call__(self, batch: dict) -> None:
        import torch

        loss = self.forward(batch)
        self.opt.zero_grad(set_to_none=not self.reference)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=not self.reference)
        self.opt.step()


def step_flops(model, batch: dict) -> int:
    """Model FLOPs of one training step (forward + backward), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    step = TrainStep(model)
    with FlopCounterMode(display=False) as counter:
        step.forward(batch).backward()
    step.opt.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def bench_train(cfg: BenchConfig, preset: str, batch_size: int, ceiling_gflops: float) -> dict:
    """Samples/s of the fast (and reference) training step for one preset and batch size."""
    import torch

    torch.manual_seed(0)
    model = _build(cfg, preset)
    batch = _random_batch(cfg, batch_size)
    flops = step_flops(model, batch)
    out = {"preset": preset, "batch_size": batch_size, "params": model.num_params(), "flops_per_step": flops}
    paths = [("fast", False)] + ([("reference", True)] if cfg.naive else [])
    for name, reference in paths:
        step = TrainStep(model, reference=reference)
        with PeakRSS() as mem:
            sec = _median_time(lambda: step(batch), cfg.steps, cfg.warmup)
        out[name] = {
            "ms_per_step": sec * 1e3,
            "samples_per_s": batch_size / sec,
            "gflops": flops / sec / 1e9,
            "fraction_of_matmul_ceiling": flops / sec / 1e9 / ceiling_gflops,
            "memory": mem.result(),
        }
    if cfg.ddp > 1:
        out["ddp"] = bench_train_ddp(cfg, preset, batch_size, cfg.ddp)
    out["samples_per_s_per_mparam"] = out["fast"]["samples_per_s"] * out["params"] / 1e6
    if cfg.naive:
        out["speedup_vs_reference"] = out["fast"]["samples_per_s"] / out["reference"]["samples_per_s"]
    if preset == "dtd" and not cfg.tiny and batch_size in AUTHORS_SAMPLES_PER_S:
        out["speedup_vs_authors"] = out["fast"]["samples_per_s"] / AUTHORS_SAMPLES_PER_S[batch_size]
    return out


def bench_train_ddp(cfg: BenchConfig, preset: str, batch_size: int, world: int) -> dict:
    """The fast step under DistributedDataParallel (gloo): `world` processes of 1 thread, batch_size/world
    each, gradients averaged: what `torchrun --nproc_per_node N dtd train --threads 1` does with the cores
    that one multi-threaded process uses poorly (serial dropout RNG and dispatch between the GEMMs)."""
    import socket

    import torch.multiprocessing as mp

    if batch_size % world:
        raise DtdError(f"bench: batch size {batch_size} does not split over {world} processes")
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_ddp_worker, args=(world, port, cfg, preset, batch_size // world, queue), nprocs=world, join=True)
    sec = queue.get()
    out = {"processes": world, "threads_per_process": 1, "batch_per_process": batch_size // world,
           "ms_per_step": sec * 1e3, "samples_per_s": batch_size / sec}
    if preset == "dtd" and not cfg.tiny and batch_size in AUTHORS_SAMPLES_PER_S:
        out["speedup_vs_authors"] = out["samples_per_s"] / AUTHORS_SAMPLES_PER_S[batch_size]
    return out


def _ddp_worker(rank: int, world: int, port: int, cfg: BenchConfig, preset: str, batch_size: int, queue) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        step = TrainStep(torch.nn.parallel.DistributedDataParallel(_build(cfg, preset)))
        batch = _random_batch(cfg, batch_size, seed=rank)
        sec = _median_time(lambda: step(batch), cfg.steps, cfg.warmup)  # the gradient all-reduce syncs the ranks
        if rank == 0:
            queue.put(sec)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- profile


def _category(op: str) -> str:
    name = op.lower()
    for cat, keys in OP_CATEGORIES:
        if any(k in name for k in keys):
            return cat
    return "other_ops"


def bench_profile(cfg: BenchConfig, preset: str, batch_size: int, sampler) -> dict:
    """Where one training step's time goes: its phases by wall clock, and op categories by self CPU
    time under torch.profiler (what no op accounts for is Python and dispatch overhead)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = _build(cfg, preset)
    step = TrainStep(model)
    batch = _random_batch(cfg, batch_size)
    for _ in range(cfg.warmup):
        step(batch)

    phases = {k: [] for k in ("sample", "to_tensor", "forward", "backward", "clip", "optimizer")}

    def timed(name, fn):
        t0 = time.perf_counter()
        r = fn()
        phases[name].append(time.perf_counter() - t0)
        return r

    for _ in range(max(cfg.steps // 2, 1)):
        arrays = timed("sample", lambda: sampler.sample(batch_size))
        timed("to_tensor", lambda: {k: torch.from_numpy(v) for k, v in arrays.items()})
        loss = timed("forward", lambda: step.forward(batch))
        step.opt.zero_grad(set_to_none=True)
        timed("backward", loss.backward)
        timed("clip", lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), step.grad_clip))
        timed("optimizer", step.opt.step)
    phase_ms = {k: statistics.median(v) * 1e3 for k, v in phases.items()}

    reps = max(cfg.steps // 2, 1)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            step(batch)
    wall_ms = (time.perf_counter() - t0) / reps * 1e3
    cats: dict[str, float] = {}
    top = []
    for ev in prof.key_averages():
        ms = ev.self_cpu_time_total / 1e3 / reps
        cats[_category(ev.key)] = cats.get(_category(ev.key), 0.0) + ms
        top.append((ms, ev.key))
    cats["python_and_dispatch"] = max(wall_ms - sum(cats.values()), 0.0)
    return {
        "preset": preset,
        "batch_size": batch_size,
        "phases_ms": phase_ms,
        "profiled_step_ms": wall_ms,
        "op_categories_ms": dict(sorted(cats.items(), key=lambda kv: -kv[1])),
        "top_ops_ms": {k: ms for ms, k in sorted(top, reverse=True)[:12]},
    }


# ---------------------------------------------------------------- sampler and inference


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
    sec = _median_time(lambda: sampler.sample(batch_size), max(cfg.steps * 3, 5))
    return {"batch_size": batch_size, "context_len": cfg.context_len, "ms_per_batch": sec * 1e3,
            "samples_per_s": batch_size / sec}  # fmt: skip


def bench_inference(cfg: BenchConfig, preset: str = "dtd") -> dict:
    """Latency of one batched ``act`` call (eval mode, full windows) for 1 and N windows."""
    import torch

    torch.manual_seed(0)
    model = _build(cfg, preset).eval()
    out = {"preset": preset}
    for n in sorted({1, cfg.episodes}):
        b = _random_batch(cfg, n)
        lengths = torch.full((n,), cfg.context_len)
        args = (b["states"], b["actions"], b["goals"], b["timesteps"], lengths)
        with torch.inference_mode():
            sec = _median_time(lambda: model.act(*args), max(cfg.steps * 3, 5), warmup=2)
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
    """Evaluation env steps/s: batched (vector env, one model call per step) vs the reference loop.

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

        model, ckpt = load_run(cfg.run)
        preset = ckpt["model_name"]
        env_id = (ckpt.get("config") or {}).get("env_id") or cfg.env_id
        targets = list((ckpt.get("config") or {}).get("eval_targets") or [target])[:1]
        target = float(targets[0])

        def run_eval(n: int, batched: bool, workers: int = 1) -> dict:
            return evaluate_run(model, ckpt, episodes=n, targets=targets, seed=0, progress=False,
                                batched=batched, max_steps=cfg.eval_max_steps, workers=workers)  # fmt: skip
    else:
        torch.manual_seed(0)
        model, env_id = _build(cfg, preset).eval(), cfg.env_id
        common = dict(targets=[target], seed=0, state_mean=np.zeros(cfg.state_dim, np.float32),
                      state_std=np.ones(cfg.state_dim, np.float32), context_len=cfg.context_len,
                      max_ep_len=cfg.max_ep_len, max_steps=cfg.eval_max_steps, progress=False)  # fmt: skip

        def run_eval(n: int, batched: bool, workers: int = 1) -> dict:
            return evaluate(model, env_id, episodes=n, batched=batched, workers=workers, **common)

    key = f"{target:g}"
    out: dict = {"env_id": env_id, "preset": preset, "run": cfg.run, "max_steps": cfg.eval_max_steps}
    for n in sorted({1, cfg.episodes}):
        row = {}
        paths = [("batched", True, 1)] + ([("reference", False, 1)] if cfg.naive else [])
        if n > 1 and cfg.eval_workers > 1:
            paths.append(("workers", True, cfg.eval_workers))
        for name, batched, workers in paths:
            with PeakRSS() as mem:  # the parent's memory: workers share its pages until they write
                res = run_eval(n, batched, workers)
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
        if "workers" in row:
            diff = np.abs(np.subtract(row["workers"]["returns"], row["batched"]["returns"]))
            row["workers_returns_identical"] = bool(np.all(diff == 0))
            row["workers_returns_max_abs_diff"] = float(diff.max())
            if cfg.naive:
                row["workers_speedup_vs_reference"] = (row["workers"]["env_steps_per_s"]
                                                       / row["reference"]["env_steps_per_s"])
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


# ---------------------------------------------------------------- driver


def run_bench(cfg: BenchConfig, progress: bool = True) -> dict:
    """Measure everything in ``cfg`` in this process; returns the JSON-ready result."""
    import torch
    from tqdm.auto import tqdm

    from dtd.data.sampler import SequenceSampler

    if not cfg.presets or not cfg.batch_sizes:
        raise DtdError("bench: need at least one preset and one batch size")
    if min(cfg.batch_sizes) < 1 or cfg.steps < 1 or cfg.episodes < 1 or cfg.eval_workers < 1:
        raise DtdError("bench: batch sizes, steps, episodes and eval workers must be >= 1")
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise DtdError(f"bench: threads must be >= 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)

    jobs = [("train", p, b) for p in cfg.presets for b in cfg.batch_sizes]
    jobs += [("profile",), ("sampler",), ("inference",), ("eval",)]
    bar = tqdm(total=len(jobs) + 1, desc="bench", unit="part", disable=not progress)
    result: dict = {"config": asdict(cfg), "machine": machine_info()}
    rss_start = _rss_mb()
    bar.set_postfix_str("matmul")
    result["matmul"] = matmul_ceiling(n=256 if cfg.tiny else 1024, reps=2 if cfg.tiny else 5)
    bar.update()
    ceiling = result["matmul"]["square_gflops"]
    sampler = SequenceSampler(synthetic_dataset(cfg), cfg.context_len, max_ep_len=cfg.max_ep_len)
    result["train"] = []
    for job in jobs:
        bar.set_postfix_str(" ".join(map(str, job)))
        if job[0] == "train":
            result["train"].append(bench_train(cfg, job[1], job[2], ceiling))
        elif job[0] == "profile":
            result["profile"] = bench_profile(cfg, cfg.presets[0], max(cfg.batch_sizes), sampler)
        elif job[0] == "sampler":
            result["sampler"] = bench_sampler(cfg, sampler, batch_size=4 if cfg.tiny else 256)
        elif job[0] == "inference":
            result["inference"] = bench_inference(cfg, cfg.presets[0])
        else:
            result["eval"] = bench_eval(cfg, cfg.presets[0])
        bar.update()
    bar.close()
    result["memory"] = {
        "train_peak_mb": max(r[p]["memory"]["peak_mb"] for r in result["train"] for p in ("fast", "reference")
                             if p in r),
        "eval_peak_mb": max(result["eval"][k][p]["memory"]["peak_mb"] for k in result["eval"]
                            if k.startswith("n") and isinstance(result["eval"][k], dict)
                            for p in ("batched", "reference") if p in result["eval"][k]),
        "process_start_mb": round(rss_start, 1),
        "process_maxrss_mb": round(_maxrss_mb(), 1),
    }  # fmt: skip
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return result


def write_json(result: dict, path: str | Path) -> Path:
    """Atomically write the result (temporary name, then rename)."""
    import json

    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=float) + "\n")
    os.replace(tmp, path)
    return path


def summary(result: dict) -> str:
    """A few lines for the terminal: the headline figures and ratios."""
    m = result["machine"]
    lines = [f"{m['cpu']} ({m['cores']} cores, {m['threads']} torch threads), torch {m['torch']}, "
             f"load {m['load_average'][0]:.1f}" if m.get("load_average") else f"{m['cpu']}",
             f"matmul ceiling: {result['matmul']['square_gflops']:.1f} GFLOP/s (square), "
             f"{result['matmul']['model_shape_gflops']:.1f} (model shape)"]  # fmt: skip
    for r in result["train"]:
        ref = f", reference {r['reference']['samples_per_s']:.0f} (x{r['speedup_vs_reference']:.2f})" if "reference" in r else ""
        lines.append(f"train {r['preset']:>8} batch {r['batch_size']:>4}: {r['fast']['samples_per_s']:7.0f} samples/s "
                     f"({r['fast']['ms_per_step']:.0f} ms/step, {100 * r['fast']['fraction_of_matmul_ceiling']:.0f}% "
                     f"of matmul ceiling){ref}")  # fmt: skip
        if "ddp" in r:
            d = r["ddp"]
            lines.append(f"    ddp {d['processes']} x 1 thread, {d['batch_per_process']} each: "
                         f"{d['samples_per_s']:7.0f} samples/s ({d['ms_per_step']:.0f} ms/step)")
    s = result["sampler"]
    lines.append(f"sampler {s['batch_size']}x{s['context_len']}: {s['ms_per_batch']:.2f} ms/batch")
    for k, v in result["inference"].items():
        if k != "preset":
            lines.append(f"act {k}: {v['ms_per_call']:.2f} ms/call")
    ev = result["eval"]
    for k, row in ev.items():
        if k.startswith("n") and isinstance(row, dict):
            ref = (f", reference {row['reference']['env_steps_per_s']:.0f} (x{row['speedup_vs_reference']:.1f}, "
                   f"max return diff {row['returns_max_abs_diff']:.1e})") if "reference" in row else ""
            lines.append(f"eval {k}: batched {row['batched']['env_steps_per_s']:.0f} env steps/s{ref}; "
                         f"env alone {row['env_only']['env_steps_per_s']:.0f}")  # fmt: skip
            if "workers" in row:
                w = row["workers"]
                lines.append(f"    {w['workers']} worker processes: {w['env_steps_per_s']:.0f} env steps/s, "
                             f"returns identical: {row['workers_returns_identical']}")
    if "speedup_n_vs_one_at_a_time" in ev:
        lines.append(f"eval: {result['config']['episodes']} together vs one at a time: x{ev['speedup_n_vs_one_at_a_time']:.1f}")
    mem = result["memory"]
    lines.append(f"peak RSS: training {mem['train_peak_mb']:.0f} MB, evaluation {mem['eval_peak_mb']:.0f} MB")
    return "\n".join(lines)
