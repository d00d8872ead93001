"""What every part of ``dtd bench`` shares: the config, the machine and memory readings, the timer,
the matmul ceiling and the models and batches the timings run on."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


# Small model sizes for --tiny (tests, smoke runs): same code paths, a fraction of the work.
TINY_OVERRIDES = {
    "dtd": dict(hidden_size=16, n_layer=1, ff_dim=32, join_ff_dim=32),
    "dt-small": dict(hidden_size=16, n_layer=1),
    "dt-large": dict(hidden_size=16, n_layer=1, n_head=2),
    "bc": dict(hidden_size=16, n_layer=1),
}


@dataclass
class BenchConfig:
    presets: list[str] = field(default_factory=lambda: ["dtd", "dt-small"])
    batch_sizes: list[int] = field(default_factory=lambda: [64, 256])
    steps: int = 10  # timed training steps per (preset, batch size), after `warmup`
    warmup: int = 3
    # the evaluation curve: N episodes together, for each N (and `act` on N windows)
    eval_episodes: list[int] = field(default_factory=lambda: [1, 10, 20, 50, 100])
    reference_episodes: int = 10  # episodes of the one-at-a-time path, the check of every N's first ones
    eval_max_steps: int = 200  # cap per evaluation episode
    env_id: str = "Hopper-v5"
    state_dim: int = 11  # Hopper's; the random-tensor training benchmark needs no dataset
    act_dim: int = 3
    context_len: int = 20
    max_ep_len: int = 1000
    threads: int | None = None  # torch threads; None keeps torch's default
    run: str | None = None  # a trained run folder: evaluation uses its model (full-length episodes)
    naive: bool = True  # also time the reference paths (the speed-up ratios)
    eval_workers: int = 2  # also time each N split over this many processes (1: skip)
    ddp: int = 0  # also time data-parallel training: this many processes, 1 thread each, batch split
    device: str = "cpu"  # cpu | cuda[:N]: where training steps, `act` and evaluation's model run
    variants: list[str] = field(default_factory=list)  # extra training variants (bench.train.parse_variant), e.g. bf16, compile
    tiny: bool = False  # tiny models (TINY_OVERRIDES), for tests

    @classmethod
    def tiny_config(cls, **kw) -> "BenchConfig":
        base = dict(batch_sizes=[4], steps=2, warmup=1, eval_episodes=[1, 2], reference_episodes=2,
                    eval_max_steps=8, max_ep_len=50, context_len=5, tiny=True)  # fmt: skip
        return cls(**{**base, **kw})

    def overrides(self, preset: str) -> dict:
        return dict(TINY_OVERRIDES.get(preset, {})) if self.tiny else {}

    def sync(self) -> None:
        """Wait for the device's queued work (CUDA runs asynchronously; timing must not)."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)


# ---------------------------------------------------------------- machine and memory


def machine_info() -> dict:
    """What the figures were measured on."""
    import torch

    return {
        "cpu": cpu_model(),
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


def cpu_model() -> str:
    """The CPU's name (/proc/cpuinfo's model name where there is one); also named in study records."""
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


def rss_mb() -> float:
    """Current resident memory (Linux /proc); elsewhere the process peak (getrusage) stands in."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return maxrss_mb()


def maxrss_mb() -> float:
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
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> "PeakRSS":
        self.start_mb = self.peak_mb = rss_mb()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end_mb = rss_mb()
        self.peak_mb = max(self.peak_mb, self.end_mb)

    def result(self) -> dict:
        return {"start_mb": round(self.start_mb, 1), "peak_mb": round(self.peak_mb, 1),
                "end_mb": round(self.end_mb, 1), "growth_mb": round(self.end_mb - self.start_mb, 1)}  # fmt: skip


def median_time(fn, reps: int, warmup: int = 1, sync=None) -> float:
    """Median seconds of ``fn()`` over ``reps`` calls after ``warmup`` untimed ones; ``sync()`` (a
    device synchronisation) runs before each clock reading."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(reps, 1)):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------- matmul ceiling


def matmul_ceiling(n: int = 1024, rows: int = 5120, dim: int = 128, reps: int = 5, device: str = "cpu",
                   sync=None) -> dict:  # fmt: skip
    """fp32 GFLOP/s of this CPU (or device): one large square ``torch.mm`` and one of the models'
    shapes ((B*K, H) x (H, 2H) at batch 256, K 20, H 128)."""
    import torch

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    x, w = torch.randn(rows, dim, device=device), torch.randn(dim, 2 * dim, device=device)
    square = median_time(lambda: torch.mm(a, b), reps, sync=sync)
    shaped = median_time(lambda: torch.mm(x, w), reps * 4, sync=sync)
    return {
        "square_n": n,
        "square_gflops": 2 * n**3 / square / 1e9,
        "model_shape": [rows, dim, 2 * dim],
        "model_shape_gflops": 2 * rows * dim * 2 * dim / shaped / 1e9,
    }



# ---------------------------------------------------------------- models and batches


def random_batch(cfg: BenchConfig, batch_size: int, goal_dim: int = 1, seed: int = 0) -> dict:
    """Random tensors with a training batch's shapes (every window full: the worst case), on cfg.device."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b, k = batch_size, cfg.context_len
    batch = {
        "states": torch.randn(b, k, cfg.state_dim, generator=g),  # (B, K, S)
        "actions": torch.rand(b, k, cfg.act_dim, generator=g) * 2 - 1,  # (B, K, A)
        "goals": torch.randn(b, k, goal_dim, generator=g),  # (B, K, G)
        "timesteps": torch.randint(0, cfg.max_ep_len, (b, k), generator=g),  # (B, K)
        "mask": torch.ones(b, k),  # (B, K)
    }
    return {name: x.to(cfg.device) for name, x in batch.items()}


def build_preset(cfg: BenchConfig, preset: str):
    from dtd.models import build_model

    return build_model(preset, cfg.state_dim, cfg.act_dim, 1, cfg.max_ep_len, cfg.context_len,
                       **cfg.overrides(preset)).to(cfg.device)  # fmt: skip
