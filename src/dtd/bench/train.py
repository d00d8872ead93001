"""Training throughput: the trainer's step (fast and reference paths), its data-parallel form and a
profile of where a step's time goes."""

from __future__ import annotations

import statistics
import time

from dtd.bench.common import BenchConfig, PeakRSS, build_preset, median_time, random_batch
from dtd.config import COMPILE_MODES
from dtd.errors import DtdError

# torch.profiler op name fragments -> category of the profile breakdown (first match wins)
OP_CATEGORIES = (
    ("layernorm", ("layer_norm",)),
    ("attention", ("scaled_dot_product", "attention", "softmax", "bmm", "masked_fill", "tril", "eye")),
    ("optimizer", ("_foreach", "adamw", "lerp", "addcdiv", "addcmul", "vector_norm", "clamp_min", "sqrt")),
    ("matmul", ("addmm", "mm", "matmul", "linear")),
)

# --variants: "+"-joined parts; fp32 eager is the "fast" path itself
VARIANT_PARTS = ("fp32", "bf16", "compile", "cudagraphs")
GPU_VARIANTS = ["bf16", "compile", "compile+bf16", "cudagraphs", "cudagraphs+bf16"]


def parse_variant(name: str) -> tuple[bool, str | None]:
    """'compile+bf16' -> (bf16 autocast?, torch.compile mode or None for eager); 'cudagraphs' is
    torch.compile's "reduce-overhead" mode (the step replayed as CUDA graphs)."""
    parts = set(name.split("+"))
    if not parts <= set(VARIANT_PARTS):
        raise DtdError(f"bench: unknown variant {name!r} (parts: {', '.join(VARIANT_PARTS)}, joined by '+')")
    kind = "cudagraphs" if "cudagraphs" in parts else "default" if "compile" in parts else "off"
    return "bf16" in parts, COMPILE_MODES[kind]  # the mapping `dtd train --compile` uses


class TrainStep:
    """One optimiser step as the trainer takes it (masked MSE, AdamW, clip 0.25), fast or reference.

    reference: the attention with explicit masks and spelled-out weights (``return_attention=True``),
    per-tensor AdamW (foreach=False) and gradients zeroed in place: the unoptimised way.
    bf16: the forward under bf16 autocast (``dtd train --bf16``); compile_mode: the model wrapped in
    ``torch.compile`` with that mode.
    """

    def __init__(self, model, reference: bool = False, grad_clip: float = 0.25, bf16: bool = False,
                 compile_mode: str | None = None):  # fmt: skip
        import torch

        from dtd.training.schedule import make_optimizer
        from dtd.training.trainer import masked_mse

        self.model, self.reference, self.grad_clip, self.loss_fn = model.train(), reference, grad_clip, masked_mse
        device = next(model.parameters()).device
        self.net = torch.compile(model, mode=compile_mode) if compile_mode else model
        self.autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
        if reference:
            self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4, foreach=False)
        else:
            self.opt = make_optimizer(model.parameters(), 1e-4, 1e-4, str(device))

    def forward(self, batch: dict):
        with self.autocast():
            out = self.net(batch["states"], batch["actions"], batch["goals"], batch["timesteps"],
                           mask=batch["mask"], return_attention=self.reference)  # fmt: skip
        return self.loss_fn(out.actions.float(), batch["actions"], batch["mask"])

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
    model = build_preset(cfg, preset)
    batch = random_batch(cfg, batch_size)
    flops = step_flops(model, batch)
    out = {"preset": preset, "batch_size": batch_size, "params": model.num_params(), "flops_per_step": flops}
    paths = [("fast", False)] + ([("reference", True)] if cfg.naive else [])
    for name, reference in paths:
        step = TrainStep(model, reference=reference)
        with PeakRSS() as mem:
            sec = median_time(lambda: step(batch), cfg.steps, cfg.warmup, sync=cfg.sync)
        out[name] = {
            "ms_per_step": sec * 1e3,
            "samples_per_s": batch_size / sec,
            "gflops": flops / sec / 1e9,
            "fraction_of_matmul_ceiling": flops / sec / 1e9 / ceiling_gflops,
            "memory": mem.result(),
        }
    if cfg.variants:
        out["variants"] = {v: bench_variant(cfg, preset, batch_size, v) for v in cfg.variants}
    if cfg.ddp > 1 and cfg.device == "cpu":
        out["ddp"] = bench_train_ddp(cfg, preset, batch_size, cfg.ddp)
    out["samples_per_s_per_mparam"] = out["fast"]["samples_per_s"] * out["params"] / 1e6
    if cfg.naive:
        out["speedup_vs_reference"] = out["fast"]["samples_per_s"] / out["reference"]["samples_per_s"]
    return out


def bench_variant(cfg: BenchConfig, preset: str, batch_size: int, variant: str) -> dict:
    """The fast step of a fresh model (same seed) as `variant` (``parse_variant``): samples/s after
    warm-up, and the first step's seconds, which include any compilation."""
    import torch

    bf16, mode = parse_variant(variant)
    torch.manual_seed(0)
    step = TrainStep(build_preset(cfg, preset), bf16=bf16, compile_mode=mode)
    batch = random_batch(cfg, batch_size)
    cfg.sync()
    t0 = time.perf_counter()
    step(batch)
    cfg.sync()
    first = time.perf_counter() - t0
    sec = median_time(lambda: step(batch), cfg.steps, cfg.warmup, sync=cfg.sync)
    out = {"bf16": bf16, "compile_mode": mode, "first_step_s": first, "ms_per_step": sec * 1e3,
           "samples_per_s": batch_size / sec}  # fmt: skip
    if cfg.device.startswith("cuda"):
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(cfg.device) / 2**20
    return out


def bench_train_ddp(cfg: BenchConfig, preset: str, batch_size: int, world: int) -> dict:
    """The fast step under DistributedDataParallel (gloo): `world` processes of 1 thread, batch_size/world
    each, gradients averaged: what `torchrun --nproc_per_node N dtd train --threads 1` does with the cores
    that one multi-threaded process uses poorly (serial dropout RNG and dispatch between the GEMMs)."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if batch_size % world:
        raise DtdError(f"bench: batch size {batch_size} does not split over {world} processes")
    # The rendezvous store lives here, not in rank 0: it outlives both ranks' teardown, and port 0 picks a
    # free port without a race.
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    port = store.port
    queue = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_ddp_worker, args=(world, port, cfg, preset, batch_size // world, queue), nprocs=world, join=True)
    sec = queue.get()
    out = {"processes": world, "threads_per_process": 1, "batch_per_process": batch_size // world,
           "ms_per_step": sec * 1e3, "samples_per_s": batch_size / sec}
    return out


def _ddp_worker(rank: int, world: int, port: int, cfg: BenchConfig, preset: str, batch_size: int, queue) -> None:
    import gc

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    store = dist.TCPStore("127.0.0.1", port, is_master=False)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial weights on every rank (DDP also broadcasts rank 0's)
        step = TrainStep(torch.nn.parallel.DistributedDataParallel(build_preset(cfg, preset)))
        batch = random_batch(cfg, batch_size, seed=rank)
        sec = median_time(lambda: step(batch), cfg.steps, cfg.warmup)  # the gradient all-reduce syncs the ranks
        if rank == 0:
            queue.put(sec)
        # DDP holds the process group: freed only at interpreter exit, gloo's threads can abort the process
        # (SIGABRT, seen once in CI). Drop it, and let every rank finish talking, before tearing down.
        del step
        gc.collect()
        dist.barrier()
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
    model = build_preset(cfg, preset)
    step = TrainStep(model)
    batch = random_batch(cfg, batch_size)
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
