"""The rollout engine: every episode of every target together in one vector env, one batched model
call per step.

An evaluation runs its len(targets) x E episodes as ONE vector env
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

``rollout_reference`` is the naive path kept for ``dtd bench`` and tests: one episode at a time,
the window rebuilt from the full history every step. Both give identical returns for the same seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dtd.errors import DtdError
from dtd.evaluation.results import Episodes
from dtd.goals import GoalFn


def model_dtype(model):
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


def groups_of(plan: Plan) -> list[tuple[int, int, float]]:
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
    groups = groups_of(plan)
    obs, _ = env.reset(seed=[s for _, s in plan])
    act_dim = env.single_action_space.shape[0]
    goal = np.concatenate([goal_fn.reset(target, obs[a:b]) for a, b, target in groups])  # (N, G) float64

    def update(goal: np.ndarray, reward: np.ndarray, obs: np.ndarray) -> np.ndarray:
        if len(groups) == 1:
            return goal_fn.update(goal, reward, obs)
        return np.concatenate([goal_fn.update(goal[a:b], reward[a:b], obs[a:b]) for a, b, _ in groups])

    # history buffers on the model's device and in its dtype: row t is written at step t, never moved
    like = dict(device=device, dtype=model_dtype(model))
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

    K, dtype, device = spec.context_len, model_dtype(model), spec.device
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
