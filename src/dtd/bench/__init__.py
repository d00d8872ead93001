"""`dtd bench`: training and evaluation throughput on this machine, with the naive paths timed beside
the fast ones in the same process, so every run reports its speed-ups as measured ratios. (The
authors' code is not shipped, so no ratio against it is computed here: BENCHMARKS.md gives the
side-by-side figures measured outside this tool.)

Sections of the result (all JSON-ready):
- ``machine``: CPU, cores, torch version, threads, git commit, date, load average before/after;
- ``matmul``: this CPU's fp32 matrix-product rate (a large ``torch.mm`` and one of the model's shapes);
- ``train``: per preset and batch size, one AdamW step + grad clip on random tensors of the batch's
  shape, median over timed steps after warm-up; the fast path (fused SDPA, the trainer's fused AdamW, grads
  set to None) and the reference path (explicit masks and attention weights, per-tensor AdamW, zeroed grads);
  model FLOPs per step (FlopCounterMode) and the fraction of the matmul ceiling reached;
- ``headline``: the figures the docs quote: per preset and batch size the fast path's samples/s and
  ``fraction_of_matmul_ceiling``, and the evaluation curve's env steps/s per N with its checks;
- ``profiles``: per batch size of the first preset, where a training step's time goes (sampling, forward,
  backward, clip, optimiser, and per-op-category self time from torch.profiler: attention, matmul, norm,
  optimiser, other ops, Python, and the top ops); ``profile`` is the largest batch's;
- ``sampler``: the cost of one training batch from ``SequenceSampler``;
- ``inference``: latency of one batched ``act`` call for each N of the curve, and act's FLOPs per window;
- ``eval``: the evaluation curve: env steps/s with N episodes together for each N (``--eval-episodes``),
  one process and split over ``eval_workers`` processes (and over an async vector env for small N),
  the raw vector-env step rate (the simulator's limit), and the one-at-a-time reference path
  (``dtd.evaluation.rollout``) whose returns every N's first episodes must equal exactly;
- ``memory``: peak resident memory during a training run and during an evaluation, and its growth;
- ``train[i]["ddp"]`` (``--ddp N``): the same step data-parallel over N one-thread gloo processes;
- ``train[i]["variants"]`` (``--variants``; by default on a GPU): the fast step under bf16 autocast,
  ``torch.compile`` and CUDA graphs (compile's "reduce-overhead" mode), with the compile time.
With ``--device cuda`` the training steps, ``act`` and evaluation's model run on the GPU, timed with
device synchronisation; the modules: ``common`` (config, timer, machine), ``train``, ``evaluation``.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

from dtd.bench.common import BenchConfig, PeakRSS, machine_info, matmul_ceiling, maxrss_mb, rss_mb
from dtd.bench.evaluation import bench_eval, bench_inference, bench_sampler, synthetic_dataset
from dtd.bench.train import GPU_VARIANTS, _category, bench_profile, bench_train, bench_train_ddp, parse_variant
from dtd.errors import DtdError

__all__ = ["GPU_VARIANTS", "BenchConfig", "PeakRSS", "_category", "bench_eval", "bench_train", "bench_train_ddp",
           "run_bench", "summary", "write_json"]


def run_bench(cfg: BenchConfig, progress: bool = True) -> dict:
    """Measure everything in ``cfg`` in this process; returns the JSON-ready result."""
    import torch
    from tqdm.auto import tqdm

    from dtd.data.sampler import SequenceSampler

    if not cfg.presets or not cfg.batch_sizes:
        raise DtdError("bench: need at least one preset and one batch size")
    if not cfg.eval_episodes:
        raise DtdError("bench: need at least one number of evaluation episodes")
    if (min(cfg.batch_sizes) < 1 or cfg.steps < 1 or min(cfg.eval_episodes) < 1 or cfg.reference_episodes < 1
            or cfg.eval_workers < 1):
        raise DtdError("bench: batch sizes, steps, evaluation episodes, reference episodes and eval workers "
                       "must be >= 1")
    from dtd.models import MODEL_NAMES

    unknown = [p for p in cfg.presets if p not in MODEL_NAMES]
    if unknown:
        raise DtdError(f"bench: unknown preset(s) {', '.join(map(repr, unknown))} (choose from {', '.join(MODEL_NAMES)})")
    for variant in cfg.variants:
        parse_variant(variant)  # one clear error before any timing
    from dtd.device import activate, resolve_device

    cfg.device = resolve_device(cfg.device)
    if cfg.device != "cpu":
        if not cfg.device.startswith("cuda"):
            raise DtdError(f"bench: device {cfg.device!r} is not supported (cpu, or cuda when a GPU is)")
        activate(cfg.device)
        if cfg.ddp > 1:
            raise DtdError("bench: --ddp times one-thread CPU processes; leave it out with --device cuda")
    if cfg.eval_max_steps < 1 or cfg.ddp < 0:
        raise DtdError("bench: --eval-max-steps must be >= 1 and --ddp >= 0")
    if cfg.run is not None:  # a bad run folder is found now, not after the training timings
        from dtd.runs import find_checkpoint

        find_checkpoint(cfg.run)
    if cfg.threads is not None:
        if cfg.threads < 1:
            raise DtdError(f"bench: threads must be >= 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)

    jobs = [("train", p, b) for p in cfg.presets for b in cfg.batch_sizes]
    jobs += [("profile",)] if cfg.device == "cpu" else []  # the profile reads CPU self times
    jobs += [("sampler",), ("inference",), ("eval",)]
    bar = tqdm(total=len(jobs) + 1, desc="bench", unit="part", disable=not progress)
    result: dict = {"config": asdict(cfg), "machine": machine_info()}
    rss_start = rss_mb()
    bar.set_postfix_str("matmul")
    result["matmul"] = matmul_ceiling(n=256 if cfg.tiny else 1024, reps=2 if cfg.tiny else 5, device=cfg.device,
                                      sync=cfg.sync)  # fmt: skip
    bar.update()
    ceiling = result["matmul"]["square_gflops"]
    sampler = SequenceSampler(synthetic_dataset(cfg), cfg.context_len, max_ep_len=cfg.max_ep_len)
    result["train"] = []
    for job in jobs:
        bar.set_postfix_str(" ".join(map(str, job)))
        if job[0] == "train":
            result["train"].append(bench_train(cfg, job[1], job[2], ceiling))
        elif job[0] == "profile":
            result["profiles"] = {str(b): bench_profile(cfg, cfg.presets[0], b, sampler)
                                  for b in sorted(set(cfg.batch_sizes))}  # fmt: skip
            result["profile"] = result["profiles"][str(max(cfg.batch_sizes))]
        elif job[0] == "sampler":
            result["sampler"] = bench_sampler(cfg, sampler, batch_size=4 if cfg.tiny else 256)
        elif job[0] == "inference":
            result["inference"] = bench_inference(cfg, cfg.presets[0], ceiling)
        else:
            result["eval"] = bench_eval(cfg, cfg.presets[0])
        bar.update()
    bar.close()
    result["memory"] = {
        "train_peak_mb": max(r[p]["memory"]["peak_mb"] for r in result["train"] for p in ("fast", "reference")
                             if p in r),
        "eval_peak_mb": max([result["eval"][f"n{n}"]["batched"]["memory"]["peak_mb"] for n in result["eval"]["episodes"]]
                            + ([result["eval"]["reference"]["memory"]["peak_mb"]] if "reference" in result["eval"]
                               else [])),
        "process_start_mb": round(rss_start, 1),
        "process_maxrss_mb": round(maxrss_mb(), 1),
    }  # fmt: skip
    result["headline"] = headline(result)
    result["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return result


def headline(result: dict) -> dict:
    """The figures the docs quote, in one place: training samples/s and fraction of the matmul ceiling per
    preset and batch size (e.g. ``train["dtd_b64"]``), evaluation env steps/s per N and its checks."""
    ev = result["eval"]
    return {
        "matmul_ceiling_gflops": result["matmul"]["square_gflops"],
        "train": {f"{r['preset']}_b{r['batch_size']}": {
            "samples_per_s": r["fast"]["samples_per_s"],
            "fraction_of_matmul_ceiling": r["fast"]["fraction_of_matmul_ceiling"]} for r in result["train"]},
        "eval": {str(n): {
            "env_steps_per_s": ev[f"n{n}"]["batched"]["env_steps_per_s"],
            "workers_env_steps_per_s": ev[f"n{n}"].get("workers", {}).get("env_steps_per_s"),
            "env_only_env_steps_per_s": ev[f"n{n}"]["env_only"]["env_steps_per_s"],
            "returns_identical": ev[f"n{n}"].get("returns_identical"),
            "reference_checked": ev[f"n{n}"].get("reference_checked", 0)} for n in ev["episodes"]},
        "eval_all_returns_identical": ev["all_returns_identical"],
    }  # fmt: skip


def write_json(result: dict, path: str | Path) -> Path:
    """Atomically write the result (temporary name, then rename)."""
    import json

    from dtd.paths import write_text_atomic

    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(result, indent=2, default=float) + "\n")


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
        for name, v in r.get("variants", {}).items():
            lines.append(f"    {name}: {v['samples_per_s']:7.0f} samples/s ({v['ms_per_step']:.1f} ms/step; "
                         f"first step {v['first_step_s']:.1f} s)")
        if "ddp" in r:
            d = r["ddp"]
            lines.append(f"    ddp {d['processes']} x 1 thread, {d['batch_per_process']} each: "
                         f"{d['samples_per_s']:7.0f} samples/s ({d['ms_per_step']:.0f} ms/step)")
    s, inf = result["sampler"], result["inference"]
    lines.append(f"sampler {s['batch_size']}x{s['context_len']}: {s['ms_per_batch']:.2f} ms/batch")
    lines.append(f"act: {inf['flops_per_window'] / 1e6:.1f} MFLOP per window")
    ev = result["eval"]
    if "reference" in ev:
        r = ev["reference"]
        lines.append(f"eval one at a time ({r['episodes']} episodes): {r['env_steps_per_s']:.0f} env steps/s")
    for n in ev["episodes"]:
        row = ev[f"n{n}"]
        ref = (f"; first {row['reference_checked']} returns identical to one at a time: {row['returns_identical']}"
               if "reference_checked" in row else "")
        act = f", act {inf[f'n{n}']['ms_per_call']:.1f} ms" if f"n{n}" in inf else ""
        lines.append(f"eval N={n:>3}: {row['batched']['env_steps_per_s']:6.0f} env steps/s together{ref}; "
                     f"env alone {row['env_only']['env_steps_per_s']:.0f}{act}")  # fmt: skip
        for path in ("async", "workers"):
            if path in row:
                label = "async vector env" if path == "async" else f"{row[path]['workers']} worker processes"
                lines.append(f"    {label}: {row[path]['env_steps_per_s']:.0f} env steps/s, "
                             f"returns identical: {row[path + '_returns_identical']}")
    mem = result["memory"]
    lines.append(f"peak RSS: training {mem['train_peak_mb']:.0f} MB, evaluation {mem['eval_peak_mb']:.0f} MB")
    return "\n".join(lines)
