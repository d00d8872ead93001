"""One place that turns a ``--device`` string into a concrete torch device string.

Every command (train, eval, attention, bench, iql, the Policy API) goes through ``resolve_device``,
so a typo or a GPU that is not there is one clear error before any work, and CUDA always comes
back with an index: ``torch.cuda.set_device`` refuses an index-less ``cuda``, and DDP ranks need
their own ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import re

from dtd.errors import DtdError

DEVICE_HELP = "auto (cuda when present, else cpu) | cpu | cuda | cuda:N | mps"
_PATTERN = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d+))?$")


def resolve_device(spec: str, local_rank: int | None = None) -> str:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> 'cpu', 'cuda:N' or 'mps'; DtdError otherwise.

    ``cuda`` (and ``auto`` on a GPU machine) takes ``local_rank`` when given (one GPU per DDP rank),
    else torch's current device. An index must exist on this machine.
    """
    import torch

    text = str(spec).strip().lower()
    match = _PATTERN.match(text)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise DtdError(f"--device: unknown device {spec!r} (use {DEVICE_HELP})")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return "cpu"
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DtdError("--device mps: no Apple MPS device is available here (use cpu)")
        return "mps"
    if not torch.cuda.is_available():
        raise DtdError(f"--device {spec}: CUDA is not available on this machine (use --device cpu or auto)")
    count = torch.cuda.device_count()
    if index is None:
        index = local_rank if local_rank is not None else torch.cuda.current_device()
    index = int(index)
    if not 0 <= index < count:
        raise DtdError(f"--device {spec}: no CUDA device {index} here ({count} visible)")
    return f"cuda:{index}"


def activate(device: str) -> None:
    """Make a resolved ``cuda:N`` the current CUDA device (so kernels and NCCL use it); no-op otherwise."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(int(device.split(":", 1)[1]))
