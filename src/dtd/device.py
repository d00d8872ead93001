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


# ---- memory ------------------------------------------------------------------------------------

_ALLOC_PATTERNS = (re.compile(r"allocate (\d+) bytes"), re.compile(r"allocate ([\d.]+ ?[KMGTPE]i?B)"))


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def available_memory(device: str = "cpu") -> int | None:
    """Bytes free for new allocations on a resolved device: the GPU's free memory, else the host's
    MemAvailable (Linux) or physical memory; None where it cannot be told."""
    if device.startswith("cuda"):
        import torch

        try:
            return int(torch.cuda.mem_get_info(torch.device(device))[0])
        except Exception:  # a driver that cannot tell (or a test's mocked GPU): no estimate, no refusal
            return None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os

        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(need: float, device: str, what: str, hint: str) -> None:
    """An up-front estimate against the free memory: a size the machine cannot hold is one DtdError that
    says how much is needed, before an allocator fails (or the OOM killer strikes) mid-run."""
    free = available_memory(device)
    if free is not None and need > free:
        where = device if device.startswith("cuda") else "this machine"
        raise DtdError(f"{what} needs at least {format_bytes(need)} of memory but {where} has {format_bytes(free)} "
                       f"available; {hint}")


# what numpy and torch say when a size does not fit their 64-bit (or 32-bit) integers
_OVERFLOW_TEXTS = ("overflow when unpacking long", "maximum allowed dimension exceeded", "cannot fit 'int' into",
                   "too many elements", "python int too large")


def out_of_memory(exc: BaseException) -> str | None:
    """The one-line message for an allocator failure (MemoryError, numpy's or torch's out-of-memory
    RuntimeError), with the size asked for when the message gives it, or for a size past the libraries'
    integers; None for any other error."""
    text = str(exc)
    if isinstance(exc, OverflowError) or (isinstance(exc, (TypeError, ValueError, RuntimeError))
                                          and any(t in text.lower() for t in _OVERFLOW_TEXTS)):
        return ("a size given is too large: it does not fit the 64-bit sizes numpy and torch use; lower the sizes "
                "given (batch size, context length, hidden size, layers, episodes, threads)")
    if not isinstance(exc, MemoryError) and not (isinstance(exc, RuntimeError) and (
            "out of memory" in text.lower() or "can't allocate memory" in text
            or "not enough memory" in text)):
        return None
    size = ""
    for pattern in _ALLOC_PATTERNS:
        found = pattern.search(text)
        if found:
            value = found.group(1)
            size = f" of {format_bytes(int(value)) if value.isdigit() else value}"
            break
    return (f"out of memory: an allocation{size} failed; lower the sizes given (batch size, context length, "
            "hidden size, episodes, steps per episode)")
