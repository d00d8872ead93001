"""A fork worker pool for the rollout engine: the episodes of one evaluation split into W contiguous
groups, each rolled out by ``rollout_batched`` in a forked CPU process with its own vector env and
1/W of the torch threads. The returns are those of one process; on 2 cores, W = 2 runs a model call
and the MuJoCo steps side by side.
"""

from __future__ import annotations

import multiprocessing
import queue
import traceback

from dtd.envs import make_vector_env
from dtd.errors import DtdError
from dtd.evaluation.results import Episodes, concat
from dtd.evaluation.rollout import Plan, RolloutSpec, rollout_batched
from dtd.goals import GoalFn


def _split(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) of `parts` contiguous, near-equal groups of range(n)."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class _SharedCounter:
    """A progress sink for rollout_batched in a worker: adds to a counter the parent's bar reads."""

    def __init__(self, value):
        self.value = value

    def update(self, k: int) -> None:
        with self.value.get_lock():
            self.value.value += k


def rollout_workers(model, env_id: str, vector: str, plan: Plan, goal_fn: GoalFn, spec: RolloutSpec,
                    workers: int, bar=None) -> Episodes:
    """``rollout_batched`` of ``plan`` with its episodes split over `workers` forked processes
    (module docstring); returns the episodes in plan order."""
    import torch

    if spec.device != "cpu":
        raise DtdError(f"evaluation: workers > 1 runs on the CPU only, not on {spec.device}")
    ctx = multiprocessing.get_context("fork")  # the model is inherited, not pickled
    groups = _split(len(plan), workers)
    threads = max(1, torch.get_num_threads() // len(groups))
    results, done = ctx.Queue(), ctx.Value("q", 0)

    def work(index: int, start: int, end: int) -> None:
        try:
            torch.set_num_threads(threads)
            env = make_vector_env(env_id, end - start, vector)
            try:
                out = rollout_batched(model, env, plan[start:end], goal_fn, spec, _SharedCounter(done))
            finally:
                env.close()
            results.put((index, out, None))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
            results.put((index, None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))

    procs = [ctx.Process(target=work, args=(i, a, b), daemon=True) for i, (a, b) in enumerate(groups)]
    for p in procs:
        p.start()
    got: dict[int, Episodes] = {}
    shown, finished = 0, False
    try:
        while len(got) < len(procs):
            try:
                index, out, error = results.get(timeout=0.1)
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if i not in got and p.exitcode not in (None, 0)]
                if dead:
                    raise DtdError(f"evaluation: worker {dead[0]} died (exit code {procs[dead[0]].exitcode})")
            else:
                if error is not None:
                    raise DtdError(f"evaluation worker {index}: {error.splitlines()[0]}")
                got[index] = out
            if bar is not None:
                bar.update(done.value - shown)
                shown = done.value
        finished = True
    finally:
        for p in procs:
            if not finished:  # an error or an interrupt: no orphans left stepping
                p.kill()
            p.join()
    return concat([got[i] for i in range(len(procs))])
