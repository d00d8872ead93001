"""The optimiser and learning-rate schedule of the authors' locomotion runs (spec "Optimisation").

Linear warm-up over `warmup_steps`, then lr_t = lr * (0.5 + 0.5 * 0.9997^(t - warmup)): a slow
exponential decay towards half the base rate, never below it.
"""

from __future__ import annotations

DECAY = 0.9997


def lr_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the base lr for optimiser step `step` (0-based: the step about to be taken)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 + 0.5 * DECAY ** (step - warmup_steps)


def make_scheduler(optimizer, warmup_steps: int):
    """A LambdaLR applying `lr_factor`; call `scheduler.step()` once after each optimiser step."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps))


def make_optimizer(params, lr: float, weight_decay: float, device: str = "cpu"):
    """AdamW; torch's fused kernel on CPU and CUDA: the same update, one pass over all parameters
    instead of a dozen per-tensor op loops (timings: BENCHMARKS.md, "Design choices")."""
    import torch

    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
