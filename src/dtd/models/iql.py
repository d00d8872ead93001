"""Implicit Q-Learning networks (Kostrikov et al., 2022): twin Q with Polyak-averaged targets, a state
value V fitted by expectile regression, and an advantage-weighted actor. dtd uses IQL for its
value V(s), which becomes the "value goal" token (spec: "Goal = state value from IQL").
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor, nn

from dtd.model_configs import IQLNetConfig


def mlp(inp: int, out: int, hidden: int, n_layers: int) -> nn.Sequential:
    dims = [inp] + [hidden] * (n_layers - 1)
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], out))


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """Asymmetric L2, mean over elements: |tau - 1(diff < 0)| * diff^2 with diff = Q - V.
    expectile > 0.5 weighs under-estimates of Q more, so V tends to an upper expectile of Q."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def scale_values(values: np.ndarray, large: float, small: float) -> np.ndarray:
    """The spec's value goal: (large - V) / (large - small) clipped to [0, 1] ("distance to go")."""
    span = max(float(large) - float(small), 1e-8)
    return np.clip((float(large) - np.asarray(values, np.float64)) / span, 0.0, 1.0)


class IQL(nn.Module):
    """q1, q2: (s, a) -> Q; value: s -> V; actor: s -> tanh action; q1_target, q2_target: frozen copies."""

    def __init__(self, cfg: IQLNetConfig):
        super().__init__()
        self.config = cfg
        s, a, h, n = cfg.state_dim, cfg.act_dim, cfg.hidden, cfg.n_layers
        self.q1, self.q2 = mlp(s + a, 1, h, n), mlp(s + a, 1, h, n)
        self.value = mlp(s, 1, h, n)
        self.actor = mlp(s, a, h, n)
        self.q1_target, self.q2_target = copy.deepcopy(self.q1), copy.deepcopy(self.q2)
        for p in list(self.q1_target.parameters()) + list(self.q2_target.parameters()):
            p.requires_grad_(False)

    def qs(self, states: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:  # (B,S),(B,A) -> 2 x (B,)
        x = torch.cat([states, actions], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)

    def target_q(self, states: Tensor, actions: Tensor) -> Tensor:  # (B,)
        x = torch.cat([states, actions], dim=-1)
        return torch.minimum(self.q1_target(x), self.q2_target(x)).squeeze(-1)

    def v(self, states: Tensor) -> Tensor:  # (B,S) -> (B,)
        return self.value(states).squeeze(-1)

    def act(self, states: Tensor) -> Tensor:  # (B,S) -> (B,A)
        return torch.tanh(self.actor(states))

    @torch.no_grad()
    def update_targets(self, tau: float) -> None:
        """Polyak averaging: target <- (1 - tau) target + tau online."""
        for online, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
            for p, tp in zip(online.parameters(), target.parameters()):
                tp.mul_(1.0 - tau).add_(p, alpha=tau)


class ValueCritic:
    """A trained IQL value net with its state statistics and the dataset's V range: raw states in,
    values or goal tokens out (numpy), for the value goal at training and evaluation time."""

    def __init__(self, model: IQL, state_mean: np.ndarray, state_std: np.ndarray,
                 large: float, small: float, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.mean = np.asarray(state_mean, np.float32)
        self.std = np.asarray(state_std, np.float32)
        self.large, self.small, self.device = float(large), float(small), device

    @torch.no_grad()
    def values(self, obs: np.ndarray, batch: int = 65536) -> np.ndarray:
        """(N, S) raw states -> (N,) float64 V(s)."""
        x = ((np.asarray(obs, np.float32) - self.mean) / self.std).astype(np.float32)
        out = [self.model.v(torch.from_numpy(x[i:i + batch]).to(self.device)).cpu().numpy()
               for i in range(0, len(x), batch)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def goal_tokens(self, obs: np.ndarray) -> np.ndarray:
        """(N, S) raw states -> (N,) scaled value goals in [0, 1]."""
        return scale_values(self.values(obs), self.large, self.small)
