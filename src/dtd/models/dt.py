"""Decision Transformer: one causal GPT over interleaved (g_1, s_1, a_1, g_2, ...) tokens.

The baseline DTd is measured against, built from the same causal ``Block`` as DTd.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from dtd.model_configs import DTConfig
from dtd.models.transformer import (
    Block,
    Dropout,
    ModelOutput,
    SequenceModel,
    blocks_at,
    init_weights,
    key_valid_from_mask,
    rowwise,
)


class DecisionTransformer(SequenceModel):
    """DT: each token = linear embedding + the step's timestep embedding; LayerNorm on the stacked
    tokens; pre-norm GPT blocks with a final LayerNorm; a_t predicted (Linear + tanh) from the
    output at s_t, which sees g<=t, s<=t, a<t. GPT-2 init N(0, 0.02) as in the original DT; no
    positional embedding and no return/state heads (the original builds them, its loss never uses them).
    Parameters for Hopper (S 11, A 3): dt-small 726,019; dt-large 1,876,563.
    """

    def __init__(self, config: DTConfig):
        super().__init__()
        self.config = cfg = config
        h = cfg.hidden_size
        self.embed_goal = nn.Linear(cfg.goal_dim, h)
        self.embed_state = nn.Linear(cfg.state_dim, h)
        self.embed_action = nn.Linear(cfg.act_dim, h)
        self.embed_time = nn.Embedding(cfg.max_ep_len, h)
        self.embed_ln = nn.LayerNorm(h)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(h, cfg.n_head, cfg.ff_mult * h, cfg.dropout, norm_first=True, activation=cfg.activation)
            for _ in range(cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(h)
        self.head = nn.Linear(h, cfg.act_dim)
        init_weights(self, "gpt2")

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
        # states (B,K,S), actions (B,K,A), goals (B,K,G), timesteps (B,K), mask (B,K) -> ModelOutput
        # at (B,): only the prediction at step `at` of each window, actions (B,1,A) (act; no attention)
        # mask: read only with return_attention (right padding: see dtd.models.transformer)
        b, k, _ = states.shape
        time = self.embed_time(timesteps.long().clamp(0, self.config.max_ep_len - 1))  # (B, K, H)
        tokens = torch.stack(
            [self.embed_goal(goals) + time, self.embed_state(states) + time, self.embed_action(actions) + time], dim=2
        ).reshape(b, 3 * k, -1)  # (B, 3K, H): g_1, s_1, a_1, g_2, ...
        x = self.drop(self.embed_ln(tokens))
        if not return_attention:  # the last block computes only the state tokens read: s_at, or all s_t
            pos = 3 * at[:, None] + 1 if at is not None else (3 * torch.arange(k, device=x.device) + 1).expand(b, k)
            x = blocks_at(self.blocks, x, pos, invariant=at is not None)  # (B, 1 or K, H)
            return ModelOutput(actions=rowwise(lambda t: torch.tanh(self.head(self.ln_f(t))), x, at is not None))
        attn: dict[str, Tensor] | None = {} if return_attention else None
        key_valid = key_valid_from_mask(mask, repeat=3) if return_attention else None  # (B, 3K)
        for i, block in enumerate(self.blocks):
            x, w = block(x, key_valid=key_valid, return_attention=return_attention)
            if attn is not None:
                attn[f"layer{i}"] = w
        x = self.ln_f(x).reshape(b, k, 3, -1)[:, :, 1]  # (B, K, H) at s_t
        return ModelOutput(actions=torch.tanh(self.head(x)), attention=attn)
