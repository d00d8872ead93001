"""Behaviour cloning: an MLP from s_t to a_t (percentage BC = this on the data layer's pct_traj)."""

from __future__ import annotations


import torch
from torch import Tensor, nn

from dtd.model_configs import BCConfig
from dtd.models.transformer import Dropout, ModelOutput, SequenceModel, init_weights, rowwise, take


class BCModel(SequenceModel):
    """Same interface as DT/DTd; ignores goals, actions and history: a_t = tanh(MLP(s_t)) at every
    position. Parameters for Hopper (S 11, A 3): 135,427."""

    def __init__(self, config: BCConfig):
        super().__init__()
        self.config = cfg = config
        layers: list[nn.Module] = []
        width = cfg.state_dim
        for _ in range(cfg.n_layer):
            layers += [nn.Linear(width, cfg.hidden_size), nn.ReLU(), Dropout(cfg.dropout)]
            width = cfg.hidden_size
        self.mlp = nn.Sequential(*layers, nn.Linear(width, cfg.act_dim))
        init_weights(self, "xavier")

    def forward(
        self,
        states: Tensor,
        actions: Tensor,
        goals: Tensor,
        timesteps: Tensor,
        mask: Tensor | None = None,
        return_attention: bool = False,
        at: Tensor | None = None,
    ) -> ModelOutput:
        # states (B,K,S) -> actions (B,K,A), or (B,1,A) at step `at` (B,); no attention, so an empty dict when asked
        if at is not None:  # batch-invariant rows, as in DT/DTd (dtd.models.transformer)
            return ModelOutput(actions=rowwise(lambda s: torch.tanh(self.mlp(s)), take(states, at)))
        return ModelOutput(actions=torch.tanh(self.mlp(states)), attention={} if return_attention else None)
