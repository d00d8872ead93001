"""dtd.Policy: a trained run as a step-by-step controller for your own loop.

A sequence model needs the recent history (states, actions, goals, timesteps) of the episode, the
run's state normalisation and a goal that evolves (return-to-go falls by each reward). Policy keeps
all of that, so a Gymnasium loop stays five lines:

    policy = dtd.Policy.load("runs/dtd-hopper", target=3600)
    obs, _ = env.reset(seed=0); reward, done = 0.0, False
    while not done:
        obs, reward, term, trunc, _ = env.step(policy.act(obs, reward))
        done = term or trunc

It reuses the model's batched ``act`` and the evaluation engine's goal objects (``GoalFn``), so its
actions are the ones ``dtd eval`` would take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dtd.device import resolve_device
from dtd.errors import DtdError
from dtd.evaluation.settings import check_targets, run_goal, target_returns
from dtd.runs import RunInfo, load_run


class Policy:
    """A stateful policy over N episodes at once (N fixed by the first ``act`` after ``reset``)."""

    def __init__(self, model: Any, state_mean: np.ndarray, state_std: np.ndarray, goal_fn: Any,
                 target: float, context_len: int, max_ep_len: int = 1000, device: str = "cpu"):
        self.model = model.eval()
        self.state_mean = np.asarray(state_mean, dtype=np.float32).reshape(-1)
        self.state_std = np.asarray(state_std, dtype=np.float32).reshape(-1)
        self.goal_fn = goal_fn
        self.target = self._check_target(target)
        self.context_len = int(context_len)
        self.max_ep_len = int(max_ep_len)
        self.device = device
        self.obs_dim = self.state_mean.shape[0]
        self.act_dim = int(getattr(model, "act_dim", 0)) or None
        self.reset()

    @classmethod
    def load(cls, run_dir: str | Path, target: float | None = None, device: str = "cpu") -> "Policy":
        """The policy of a run folder's last checkpoint (or a checkpoint file).

        ``target``: the return to aim for (reward units); default the run's first evaluation target.
        """
        device = resolve_device(device)
        model, info = load_run(run_dir)
        model.to(device)
        goal_fn, default_target = goal_for_run(info, device)
        target = default_target if target is None else target
        if target is None:
            raise DtdError(f"{run_dir}: no default target return for this run's task; pass target=...")
        return cls(model, info.state_mean, info.state_std, goal_fn, target, context_len=info.context_len,
                   max_ep_len=info.max_ep_len, device=device)

    # ----------------------------------------------------------------------------------------

    def reset(self, index: Any = None, target: float | None = None) -> None:
        """Start new episode(s): all of them, or only the rows ``index`` (bool mask or ints)."""
        if target is not None:
            self.target = self._check_target(target)
        if index is None or not hasattr(self, "_t"):
            self._t = None  # (N,) steps taken in each episode; buffers are made on the next act
            return
        self._t[index] = 0

    def act(self, obs: Any, reward: Any = None) -> np.ndarray:
        """The action for observation(s) ``obs`` (S,) or (N, S); ``reward`` is what the last action earned.

        On the first step of an episode ``reward`` is ignored; afterwards it is required (scalar or (N,)).
        """
        single, obs = self._check_obs(obs)
        n = len(obs)
        if self._t is None:
            self._alloc(n)
        elif n != len(self._t):
            raise DtdError(f"policy: got {n} observations but this episode batch has {len(self._t)}; call reset() first")
        new = self._t == 0  # (N,) rows starting an episode
        goal = np.empty_like(self._goal)
        if new.any():
            goal[new] = self.goal_fn.reset(self.target, obs[new])
        if (~new).any():
            if reward is None:
                raise DtdError("policy: pass the reward of the last step, act(obs, reward), after the first step")
            r = self._check_reward(reward, n)
            if not np.isfinite(r).all():
                raise DtdError("policy: reward contains NaN or inf")
            goal[~new] = self.goal_fn.update(self._goal[~new], r[~new], obs[~new])
        self._goal = goal

        # append this step to each row's window of the last K steps (right-padded, rows may differ)
        s = (obs - self.state_mean) / self.state_std  # (N, S)
        pos = np.minimum(self._t, self.context_len - 1)  # (N,) slot of this step
        full = self._t >= self.context_len
        for buf in (self._states, self._actions, self._goals, self._steps):
            buf[full] = np.roll(buf[full], -1, axis=1)
        rows = np.arange(n)
        self._states[rows, pos] = s
        self._actions[rows, pos] = 0.0  # the slot of the action being chosen is ignored by act()
        self._goals[rows, pos] = goal
        self._steps[rows, pos] = np.minimum(self._t, self.max_ep_len - 1)
        lengths = pos + 1

        action = self._model_act(lengths)  # (N, A)
        self._actions[rows, pos] = action
        self._t += 1
        return action[0] if single else action

    def window(self) -> dict[str, np.ndarray]:
        """The current model windows (what the last ``act`` saw, with its action filled in).

        states (N,K,S) normalised, actions (N,K,A), goals (N,K,G), timesteps (N,K), mask (N,K);
        right-padded, the last valid step is the latest one.
        """
        if self._t is None:
            raise DtdError("policy: no step taken yet in this episode batch")
        lengths = np.minimum(self._t, self.context_len)
        return {"states": self._states.copy(), "actions": self._actions.copy(), "goals": self._goals.copy(),
                "timesteps": self._steps.copy(),
                "mask": (np.arange(self.context_len)[None] < lengths[:, None]).astype(np.float32)}

    # ----------------------------------------------------------------------------------------

    def _check_target(self, target: Any) -> float:
        """A target whose goal token is a finite float32 (NaN, inf or 1e300 would give NaN actions)."""
        try:
            value = float(target)
        except (TypeError, ValueError):
            raise DtdError(f"policy: target must be a number, got {target!r}") from None
        check_targets([value], self.goal_fn, "policy")
        return value

    @staticmethod
    def _check_reward(reward: Any, n: int) -> np.ndarray:
        """The last step's reward: one number, or one per episode, (N,)."""
        try:
            r = np.asarray(reward, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DtdError(f"policy: reward is not numeric ({exc})") from None
        if r.shape not in ((), (1,), (n,)):
            raise DtdError(f"policy: reward has shape {r.shape}; expected a number or shape ({n},), one per episode")
        return np.broadcast_to(r, (n,))

    def _check_obs(self, obs: Any) -> tuple[bool, np.ndarray]:
        try:
            x = np.asarray(obs, dtype=np.float64)  # as the env gives it: normalised exactly as the evaluation engine does
        except (TypeError, ValueError) as exc:
            raise DtdError(f"policy: observation is not numeric ({exc})") from None
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise DtdError(f"policy: observation shape {np.shape(obs)}, expected ({self.obs_dim},) or (N, {self.obs_dim})")
        if not np.isfinite(x).all():
            raise DtdError("policy: observation contains NaN or inf")
        return single, x

    def _alloc(self, n: int) -> None:
        k, g = self.context_len, self.goal_fn.goal_dim
        a = self.act_dim or _act_dim(self.model)
        self.act_dim = a
        self._t = np.zeros(n, dtype=np.int64)
        self._goal = np.zeros((n, g), dtype=np.float64)
        self._states = np.zeros((n, k, self.obs_dim), dtype=np.float32)
        self._actions = np.zeros((n, k, a), dtype=np.float32)
        self._goals = np.zeros((n, k, g), dtype=np.float32)
        self._steps = np.zeros((n, k), dtype=np.int64)

    def _model_act(self, lengths: np.ndarray) -> np.ndarray:
        import torch

        dev = self.device
        with torch.no_grad():
            a = self.model.act(
                torch.as_tensor(self._states, device=dev), torch.as_tensor(self._actions, device=dev),
                torch.as_tensor(self._goals, device=dev), torch.as_tensor(self._steps, device=dev),
                torch.as_tensor(lengths, device=dev),
            )
        return a.float().cpu().numpy()


def _act_dim(model: Any) -> int:
    """Action size from the model's attribute or its last layer with a bias."""
    for name in ("act_dim", "action_dim"):
        if isinstance(getattr(model, name, None), int):
            return getattr(model, name)
    cfg = getattr(model, "config", None)
    if isinstance(getattr(cfg, "act_dim", None), int):
        return cfg.act_dim
    last = [p for n, p in model.named_parameters() if n.endswith("bias")][-1]
    return int(last.shape[0])


def goal_for_run(info: RunInfo, device: str = "cpu") -> tuple[Any, float | None]:
    """The run's goal object (the evaluation engine's: return-to-go, IQL value, maze) and its default
    target (None when a return-to-go run's task has none; value and maze goals ignore the target)."""
    goal_fn = run_goal(info, device)
    if info.goal != "rtg":
        return goal_fn, 0.0
    if info.config.eval_targets:
        return goal_fn, float(info.config.eval_targets[0])
    try:
        return goal_fn, target_returns(info.env_id)[0] if info.env_id else None
    except DtdError:
        return goal_fn, None
