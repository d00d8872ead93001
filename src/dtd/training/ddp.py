"""DistributedDataParallel helpers: `torchrun --nproc_per_node N -m dtd train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK (and the rendezvous address); without them training
runs in one process and these helpers are no-ops. Backend: nccl when the rank has a GPU, else gloo.
Each rank samples its own batches (seed + rank); gradients are averaged across ranks, so the
effective batch is batch_size x world_size. Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from dtd.device import activate, resolve_device


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the process group when launched by torchrun (world size > 1); `device` picks the backend."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    import torch.distributed as dist

    dist_info = Dist(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    gpu = resolve_device(device, dist_info.local_rank).startswith("cuda")  # a bad device fails before joining
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if gpu else "gloo")
    return dist_info


def rank_device(device: str, info: Dist) -> str:
    """This rank's resolved device ('auto' -> cuda when present), made current when it is a GPU.

    With several ranks an index-less cuda becomes cuda:LOCAL_RANK; alone, torch's current device.
    """

    resolved = resolve_device(device, info.local_rank if info.enabled else None)
    activate(resolved)
    return resolved


def barrier(info: Dist) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj: Any, info: Dist) -> Any:
    """Rank 0's value of `obj` on every rank (e.g. the run folder name)."""
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, info: Dist) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every rank (per-rank RNG states for checkpoints)."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def cleanup(info: Dist) -> None:
    """Tear the group down once nothing references it: a DDP module left to the interpreter's exit takes
    gloo's threads down with it there, and the process aborts (SIGABRT) after training succeeded."""
    if info.enabled:
        import gc

        import torch.distributed as dist

        gc.collect()  # DDP wrappers sit in reference cycles
        if dist.is_initialized():
            dist.destroy_process_group()
