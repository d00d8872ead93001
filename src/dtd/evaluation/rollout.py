"""Roll a trained model out in the simulator: every episode of every target together, one batched
model call per step.

``evaluate(model, env_id, targets, episodes=E)`` runs the len(targets) x E episodes as ONE vector env
of N = len(targets) * E copies: copy j plays target j // E with seed ``seed + j % E``, exactly the
episode it played when each target was a separate batch of E, so the results per target are the
same (``act`` is bit-for-bit independent of how many windows share a call, and the goal object sees
the same calls, one per target group). One rollout lasts as long as its longest episode, and the
model calls grow with N instead of being repeated per target.

The episodes advance in lock-step, so at env step t every running episode is at timestep t and the
model window is one slice ``[lo, lo + K)`` of preallocated (N, T, ·) history buffers. For t < K that
slice is already right-padded: the steps after t have not been written yet and are still zero.
Finished episodes drop out of the model call; their vector-env copies keep stepping (autoreset)
and are ignored.

``evaluate(..., workers=W)`` splits the N episodes into W contiguous groups, each rolled out as above
in a forked CPU process with its own vector env and 1/W of the torch threads. The returns are those
of one process; on 2 cores, W = 2 runs a model call and the MuJoCo steps side by side.

``evaluate(..., batched=False)`` (``evaluate_reference``) is the naive path kept for ``dtd bench``
and tests: one episode at a time, the window rebuilt from the full history every step. Every path
gives identical returns for the same seeds.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dtd.data.refscores import normalize, ref_scores
from dtd.errors import DtdError
from dtd.envs import DEFAULT_VECTOR, make_env, make_vector_env
from dtd.evaluation.settings import target_returns
from dtd.goals import GoalFn, ReturnToGo, make_goal_fn
from dtd.runs import RunInfo, load_critic


@dataclass
class Episodes:
    """Outcome of N episodes for one target."""

    returns: np.ndarray  # (N,) float64, undiscounted
    lengths: np.ndarray  # (N,) int64
    success: np.ndarray | None  # (N,) bool, when the env reports info["success"] (mazes)


def _model_dtype(model):
    """Inputs follow the model's parameter dtype (float32 normally; float64 in the identity test)."""
    import torch

    return next(iter(model.parameters()), torch.zeros(())).dtype


@dataclass(frozen=True)
class RolloutSpec:
    """What both rollout paths need besides the model, env, goal and seed."""

    state_mean: np.ndarray  # (S,) float32, the training data's statistics
    state_std: np.ndarray  # (S,) float32
    context_len: int  # K, window length
    max_ep_len: int  # the model's timestep table size: timesteps clipped to max_ep_len - 1
    max_steps: int  # episode cap
    device: str = "cpu"

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        """The training-time state normalisation, float32 (one definition for both paths)."""
        return ((obs - self.state_mean) / self.state_std).astype(np.float32)


Plan = Sequence[tuple[float, int]]  # one (target, seed) per episode, in batch order


def _groups(plan: Plan) -> list[tuple[int, int, float]]:
    """(start, end, target) of each run of episodes with one target and consecutive seeds: the batch
    of E episodes one target had to itself before targets shared a rollout."""
    out: list[tuple[int, int, float]] = []
    for j, (target, seed) in enumerate(plan):
        if j and target == plan[j - 1][0] and seed == plan[j - 1][1] + 1:
            out[-1] = (out[-1][0], j + 1, target)
        else:
            out.append((j, j + 1, target))
    return out


def rollout_batched(model, env, plan: Plan, goal_fn: GoalFn, spec: RolloutSpec, progress=None) -> Episodes:
    """Run the ``env.num_envs`` episodes of ``plan`` together in a vector env; see the module docstring.

    The goal object is called once per run of same-target episodes (``reset`` needs one target; a
    goal whose computation depends on the number of rows, like the IQL critic's, then sees the
    calls it saw when each target was its own batch).
    """
    import torch

    n, K, T, device = env.num_envs, spec.context_len, max(spec.max_steps, spec.context_len), spec.device
    if len(plan) != n:
        raise DtdError(f"evaluation: {len(plan)} episodes planned for a vector env of {n}")
    groups = _groups(plan)
    obs, _ = env.reset(seed=[s for _, s in plan])
    act_dim = env.single_action_space.shape[0]
    goal = np.concatenate([goal_fn.reset(target, obs[a:b]) for a, b, target in groups])  # (N, G) float64

    def update(goal: np.ndarray, reward: np.ndarray, obs: np.ndarray) -> np.ndarray:
        if len(groups) == 1:
            return goal_fn.update(goal, reward, obs)
        return np.concatenate([goal_fn.update(goal[a:b], reward[a:b], obs[a:b]) for a, b, _ in groups])

    # history buffers on the model's device and in its dtype: row t is written at step t, never moved
    like = dict(device=device, dtype=_model_dtype(model))
    states = torch.zeros((n, T, obs.shape[1]), **like)  # (N, T, S)
    actions = torch.zeros((n, T, act_dim), **like)  # (N, T, A)
    goals = torch.zeros((n, T, goal.shape[1]), **like)  # (N, T, G)
    timesteps = torch.arange(T, device=device).clamp(max=spec.max_ep_len - 1)  # (T,)

    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    success = None
    low, high = env.single_action_space.low, env.single_action_space.high
    step_actions = np.zeros((n, act_dim), dtype=np.float32)
    for t in range(spec.max_steps):
        states[:, t] = torch.from_numpy(spec.normalize(obs)).to(**like)
        goals[:, t] = torch.from_numpy(goal.astype(np.float32)).to(**like)
        lo = max(0, t - K + 1)
        run = None if not done.any() else torch.from_numpy(np.flatnonzero(~done)).to(device)
        pick = (lambda buf: buf[:, lo : lo + K]) if run is None else (lambda buf: buf[run, lo : lo + K])
        m = n if run is None else len(run)
        with torch.inference_mode():
            act = model.act(
                pick(states),  # (m, K, S) right-padded
                pick(actions),  # (m, K, A)
                pick(goals),  # (m, K, G)
                timesteps[lo : lo + K].expand(m, -1),  # (m, K)
                torch.full((m,), t + 1 - lo, device=device, dtype=torch.long),  # (m,)
            )  # (m, A)
        # the history keeps the executed action: float32, clipped to the action space
        step_actions[~done] = np.clip(act.float().cpu().numpy(), low, high)
        actions[:, t] = torch.from_numpy(step_actions).to(**like)
        obs, reward, terminated, truncated, info = env.step(step_actions)
        running = ~done
        returns += np.where(running, reward, 0.0)
        if "success" in info:
            success = np.zeros(n, dtype=bool) if success is None else success
            success |= running & np.asarray(info["success"], dtype=bool)
        goal = update(goal, reward, obs)
        ended = running & (terminated | truncated | (t + 1 == spec.max_steps))
        lengths[ended] = t + 1
        done |= ended
        if progress is not None:
            progress.update(int(running.sum()))
        if done.all():
            break
    return Episodes(returns, lengths, success)


def rollout_reference(
    model,
    env,
    target: float,
    goal_fn: GoalFn,
    spec: RolloutSpec,
    seed: int,
    progress=None,
) -> tuple[float, int, bool | None]:
    """One episode, the naive way: full history lists, window rebuilt and padded every step."""
    import torch

    K, dtype, device = spec.context_len, _model_dtype(model), spec.device
    obs, _ = env.reset(seed=seed)
    act_dim = env.action_space.shape[0]
    goal = goal_fn.reset(target, obs[None])  # (1, G)
    hist_s, hist_a, hist_g = [], [], []
    ret, length, success = 0.0, 0, None
    for t in range(spec.max_steps):
        hist_s.append(spec.normalize(obs))
        hist_g.append(goal[0].astype(np.float32))
        hist_a.append(np.zeros(act_dim, dtype=np.float32))  # the slot for a_t, ignored by act()
        lo = max(0, t - K + 1)
        L = t + 1 - lo

        def window(hist):  # (1, K, D): the last L steps, then zeros
            out = np.zeros((1, K, len(hist[0])), dtype=np.float32)
            out[0, :L] = np.stack(hist[lo:])
            return torch.from_numpy(out).to(device=device, dtype=dtype)

        ts = np.zeros((1, K), dtype=np.int64)
        ts[0, :L] = np.minimum(np.arange(lo, t + 1), spec.max_ep_len - 1)
        with torch.inference_mode():
            act = model.act(
                window(hist_s),
                window(hist_a),
                window(hist_g),
                torch.from_numpy(ts).to(device),
                torch.tensor([L], device=device),
            )[0]
        a = np.clip(act.float().cpu().numpy(), env.action_space.low, env.action_space.high)
        hist_a[-1] = a
        obs, reward, terminated, truncated, info = env.step(a)
        ret += float(reward)
        length = t + 1
        if "success" in info:
            success = bool(success) or bool(info["success"])
        goal = goal_fn.update(goal, np.array([reward]), obs[None])
        if progress is not None:
            progress.update(1)
        if terminated or truncated:
            break
    return ret, length, success


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
    return _concat([got[i] for i in range(len(procs))])


def _concat(parts: Sequence[Episodes]) -> Episodes:
    """Episodes of consecutive slices of a plan, joined in order (success only if every part has it)."""
    success = None if any(e.success is None for e in parts) else np.concatenate([e.success for e in parts])
    return Episodes(np.concatenate([e.returns for e in parts]), np.concatenate([e.lengths for e in parts]), success)


def _take(eps: Episodes, a: int, b: int) -> Episodes:
    return Episodes(eps.returns[a:b], eps.lengths[a:b], None if eps.success is None else eps.success[a:b])


def _rollout_here(model, env_id: str, plan: Plan, goal_fn: GoalFn, spec: RolloutSpec, batched: bool,
                  vector: str, progress: bool) -> Episodes:
    """The whole plan in this process: one vector env of len(plan), or the reference loop episode by episode."""
    from tqdm.auto import tqdm

    env = make_vector_env(env_id, len(plan), vector) if batched else make_env(env_id)
    desc = f"eval {env_id} ({len(plan)} episodes{' together' if batched else ', one at a time'})"
    try:
        with tqdm(desc=desc, unit="step", disable=not progress, leave=False) as bar:
            if batched:
                return rollout_batched(model, env, plan, goal_fn, spec, progress=bar)
            one = [rollout_reference(model, env, target, goal_fn, spec, seed, progress=bar) for target, seed in plan]
    finally:
        env.close()
    success = [s for _, _, s in one]
    return Episodes(np.array([r for r, _, _ in one]), np.array([n for _, n, _ in one], dtype=np.int64),
                    None if success[0] is None else np.array(success, dtype=bool))  # fmt: skip


def _reference(env_id: str, ref_min: float | None, ref_max: float | None) -> tuple[float, float] | None:
    """(random, expert) returns for the normalized score: the given ones, else D4RL's for the task."""
    if ref_min is not None and ref_max is not None:
        return float(ref_min), float(ref_max)
    return ref_scores(env_id)


def summarize(target: float, eps: Episodes, ref: tuple[float, float] | None) -> dict:
    """JSON-ready per-target results: raw lists plus mean and std (population std, ddof=0)."""
    out = {
        "target": float(target),
        "returns": [float(r) for r in eps.returns],
        "lengths": [int(n) for n in eps.lengths],
        "return_mean": float(np.mean(eps.returns)),
        "return_std": float(np.std(eps.returns)),
        "length_mean": float(np.mean(eps.lengths)),
    }
    if ref is not None:
        scores = normalize(eps.returns, *ref)
        out.update(
            normalized=[float(s) for s in scores],
            normalized_mean=float(np.mean(scores)),
            normalized_std=float(np.std(scores)),
        )
    if eps.success is not None:
        out["success_rate"] = float(np.mean(eps.success))
    return out


def target_key(target: float) -> str:
    """3600.0 -> '3600': the JSON key of a target."""
    return f"{target:g}"


def evaluate(
    model,
    env_id: str,
    targets: Sequence[float] | None = None,
    *,
    episodes: int = 10,
    seed: int = 0,
    state_mean: np.ndarray,
    state_std: np.ndarray,
    reward_scale: float = 1000.0,
    context_len: int = 20,
    max_ep_len: int = 1000,
    max_steps: int | None = None,
    delayed: bool = False,
    device: str = "cpu",
    ref_min: float | None = None,
    ref_max: float | None = None,
    goal_fn: GoalFn | None = None,
    batched: bool = True,
    vector: str = DEFAULT_VECTOR,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Evaluate ``model`` for each target return; episode i of every target uses seed + i.

    Every target's episodes run together, one vector env of len(targets) x ``episodes`` (module
    docstring); the results per target are those of a batch of ``episodes`` for that target alone.
    ``max_ep_len`` is the model's timestep limit (timesteps are clipped to max_ep_len - 1);
    ``max_steps`` caps an episode's length (default max_ep_len). ``goal_fn`` defaults to the
    return-to-go (spec) with ``reward_scale`` and ``delayed``. ``workers`` > 1 splits the batched
    episodes over that many forked CPU processes (module docstring). Returns a JSON-ready dict with one
    entry per target under "targets" (see ``summarize``) and the best target's normalized score.
    """
    from tqdm.auto import tqdm

    if episodes < 1:
        raise DtdError(f"evaluation: episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise DtdError(f"evaluation: workers must be >= 1, got {workers}")
    targets = list(target_returns(env_id) if targets is None else targets)
    if not targets:
        raise DtdError("evaluation: no target returns given")
    if not all(math.isfinite(t) for t in targets):
        raise DtdError(f"evaluation: target returns must be finite numbers, got {targets}")
    plan = [(float(t), seed + i) for t in targets for i in range(episodes)]  # target k: plan[k*E : (k+1)*E]
    workers = min(workers, len(plan)) if batched else 1
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        warnings.warn("evaluation: workers need the 'fork' start method (not available here); using one process")
        workers = 1
    max_steps = max_ep_len if max_steps is None else max_steps
    goal_fn = ReturnToGo(reward_scale, delayed) if goal_fn is None else goal_fn
    spec = RolloutSpec(
        np.asarray(state_mean, dtype=np.float32).reshape(-1), np.asarray(state_std, dtype=np.float32).reshape(-1),
        context_len, max_ep_len, max_steps, device,
    )  # fmt: skip
    ref = _reference(env_id, ref_min, ref_max)
    start = time.perf_counter()  # the timing includes making the environments
    if workers > 1:
        desc = f"eval {env_id} ({len(plan)} episodes, {workers} workers)"
        with tqdm(desc=desc, unit="step", disable=not progress, leave=False) as bar:
            eps = rollout_workers(model, env_id, vector, plan, goal_fn, spec, workers, bar)
    else:
        eps = _rollout_here(model, env_id, plan, goal_fn, spec, batched, vector, progress)
    runs = [_take(eps, k * episodes, (k + 1) * episodes) for k in range(len(targets))]
    results, env_steps = {}, 0
    for target, eps in zip(targets, runs):
        results[target_key(target)] = summarize(target, eps, ref)
        env_steps += int(eps.lengths.sum())
    seconds = time.perf_counter() - start
    out = {
        "env_id": env_id,
        "episodes": episodes,
        "seed": seed,
        "reward_scale": reward_scale,
        "delayed": delayed,
        "context_len": context_len,
        "max_ep_len": max_ep_len,
        "max_steps": max_steps,
        "batched": batched,
        "workers": workers,
        "ref_scores": None if ref is None else list(ref),  # (random, expert) returns behind "normalized"
        "targets": results,
        "env_steps": env_steps,
        "seconds": seconds,
        "env_steps_per_s": env_steps / max(seconds, 1e-9),
    }
    key = "normalized_mean" if ref is not None else "return_mean"
    best = max(results, key=lambda k: results[k][key])
    out.update(best_target=best, best_score=results[best][key], score_kind=key.removesuffix("_mean"))
    return out


def evaluate_reference(model, env_id: str, targets: Sequence[float] | None = None, **kwargs) -> dict:
    """The naive path (one episode at a time, window rebuilt each step), for timing and checks."""
    return evaluate(model, env_id, targets, batched=False, **kwargs)


def run_goal(info: RunInfo, device: str = "cpu") -> GoalFn:
    """A run's goal object: return-to-go at the run's scale, the maze token, or the IQL critic's value."""
    critic = load_critic(info.config.critic, device) if info.goal == "iql" else None
    goal_fn = make_goal_fn(info.goal, info.state_mean, info.state_std, critic)
    return ReturnToGo(info.reward_scale, info.config.delayed) if goal_fn is None else goal_fn


def evaluate_run(
    model,
    info: RunInfo,
    *,
    episodes: int | None = None,
    targets: Sequence[float] | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    **overrides,
) -> dict:
    """Evaluate a run's model with the settings its run record holds; the dataset is never read.

    Reference returns are the dataset's, as during training (D4RL's for the task when the dataset had
    none). A dtd 0.1 checkpoint recorded none: D4RL's are used, with a warning.
    """
    cfg = info.config
    if not info.env_id:
        raise DtdError(f"{info.dataset}: the dataset names no environment; set env_id in the run's config")
    if info.format == 1:
        warnings.warn(f"a dtd 0.1 checkpoint records no reference returns; normalized scores use D4RL's for "
                      f"{info.env_id}")
    ref_min, ref_max = info.ref_scores or (None, None)
    settings = dict(
        episodes=episodes or cfg.eval_episodes or 10,
        seed=seed,
        state_mean=info.state_mean,
        state_std=info.state_std,
        reward_scale=info.reward_scale,
        context_len=info.context_len,
        max_ep_len=info.max_ep_len,
        max_steps=cfg.eval_max_steps or None,
        delayed=cfg.delayed,
        device=device,
        ref_min=ref_min,
        ref_max=ref_max,
        progress=progress,
        goal_fn=run_goal(info, device),
    )
    settings.update(overrides)
    return evaluate(model, info.env_id, targets or cfg.eval_targets or None, **settings)


def format_table(result: dict) -> str:
    """A plain-text table of one evaluate() result: a row per target."""
    rows = [f"{result['env_id']}: {result['episodes']} episodes per target, seeds {result['seed']}.."
            f"{result['seed'] + result['episodes'] - 1}"]  # fmt: skip
    rows.append(f"{'target':>8}  {'return':>18}  {'normalized':>14}  {'length':>7}")
    for key, t in result["targets"].items():
        norm = f"{t['normalized_mean']:6.1f} ± {t['normalized_std']:5.1f}" if "normalized_mean" in t else "—"
        rows.append(f"{key:>8}  {t['return_mean']:9.1f} ± {t['return_std']:6.1f}  {norm:>14}  {t['length_mean']:7.1f}")
    return "\n".join(rows)
