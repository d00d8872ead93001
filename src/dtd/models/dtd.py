"""Decision Transducer: a trajectory as three "sentences" (goal, state, action), each encoded on its
own, the goal injected into state/action by causal cross-attention, then a small causal join.

Spec: shared/spec/decision-transducer.md (switch names and defaults are the spec's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dtd.model_configs import MODALITIES, DTdConfig
from dtd.models.transformer import (
    Block,
    CausalAttention,
    Dropout,
    ModelOutput,
    SequenceModel,
    blocks_at,
    init_weights,
    key_valid_from_mask,
    rowwise,
)


class BiasCombine(nn.Module):
    """Inject the encoded goal into one stream: causal cross-attention (1 head), then combine.

    x = the stream, c = its attention over the goal stream (query t sees goals <= t).
    c21: W3(W1 x + W2 c); c22: W3(GELU(W1 x + W2 c)); c23: x + sigmoid(W3 [c; x]) * c.
    """

    def __init__(self, dim: int, combiner: str, dropout: float):
        super().__init__()
        self.combiner = combiner
        self.attn = CausalAttention(dim, 1, dropout)
        if combiner in ("c21", "c22"):
            self.w1, self.w2 = nn.Linear(dim, 2 * dim), nn.Linear(dim, 2 * dim)
        self.w3 = nn.Linear(2 * dim, dim)

    def forward(
        self, x: Tensor, goal: Tensor, key_valid: Tensor | None, return_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        # x, goal (B, K, H) -> (B, K, H)
        c, w = self.attn(x, goal, key_valid, return_attention)
        if self.combiner == "c23":
            return x + torch.sigmoid(self.w3(torch.cat([c, x], dim=-1))) * c, w
        z = self.w1(x) + self.w2(c)  # (B, K, 2H)
        return self.w3(F.gelu(z) if self.combiner == "c22" else z), w


class DecisionTransducer(SequenceModel):
    """DTd. Predicts a_t from the join output at s_t, which sees s<=t, a<t, g<=t and never a_t.

    Flow per window (B, K): embed each stream (linear + the shared timestep table + modality vector),
    embedding LayerNorm (norm_mode); a causal encoder per stream (goal encoder absent under b0);
    BiasCombine on the state and/or action stream; the join interleaves (s_1, a_1, s_2, ...) or with
    join_all (g_1, s_1, a_1, ...), optional LayerNorm (norm_joint), causal post-norm layer(s); the
    outputs at the state positions go through Linear + tanh. An optional waypoint head (Linear H -> 2)
    reads the encoded goal stream.

    The default is the authors' working model: 1,852,419 parameters for Hopper (S 11, A 3, H 128,
    max_ep_len 1000), every one of them trained (their class registers 2,515,715, of which 663,296
    never get a gradient: copied template layers and unused combiner layers; we build none of them).
      9 encoder layers (3 streams x n_layer 3), pre-norm, 1 head, FF 256:  9 x 132,480 = 1,192,320
      2 BiasCombine c22 (cross-attn 66,048 + W1, W2 33,024 each + W3 32,896): 2 x 164,992 = 329,984
      join layer, post-norm, 2 heads, FF 512:                                              198,272
      one timestep table (1000 x 128) shared by the three input streams:                   128,000
      embeddings goal 256 + state 1,536 + action 512, modality 384, 3 LayerNorms (n3) 768,
      action head 387:                                                                       3,843
    dtd 0.1's default (DTdConfig.LEGACY, an ablation row in RESULTS.md) added a timestep table per
    stream and per-modality tables at the join (+640,000), dropout on the embeddings and on the goal
    cross-attention, and Xavier on separate q/k/v with zero biases (init separate_qkv).
    Norm modes: n0 none; n1 one shared LayerNorm applied to each stream; n2 one LayerNorm over the
    stacked streams, which normalises each token over H, so it is the same function as n1 (kept as
    its own name for the paper's switch). Normalising a step's modalities jointly would mix a_t
    into the token s_t and break causality; n3 (default) a LayerNorm per stream.
    Goal under bias "right" (without join_all): g_t enters only the action stream, and the
    prediction at s_t reads that stream up to a_{t-1}, so g_t first acts on the prediction of a_{t+1}.
    """

    def __init__(self, config: DTdConfig):
        super().__init__()
        self.config = cfg = config
        h, streams = cfg.hidden_size, cfg.streams
        self.embed = nn.ModuleDict(
            {m: nn.Linear({"goal": cfg.goal_dim, "state": cfg.state_dim, "action": cfg.act_dim}[m], h) for m in streams}
        )
        # timestep tables packed one after another in one embedding; stream m reads row time_row[m] + t
        n_tables = len(streams) if cfg.timestep_tables == "per_stream" else 1
        self.time_row = {m: (i if n_tables > 1 else 0) * cfg.max_ep_len for i, m in enumerate(streams)}
        self.time_in = nn.Embedding(n_tables * cfg.max_ep_len, h)
        self.modality = nn.Parameter(torch.empty(len(MODALITIES), h)) if cfg.modality_emb else None
        if cfg.norm_mode in ("n1", "n2"):  # one LayerNorm for all streams (see the class docstring)
            self.emb_ln = nn.LayerNorm(h)
        elif cfg.norm_mode == "n3":
            self.emb_ln = nn.ModuleDict({m: nn.LayerNorm(h) for m in streams})
        self.drop = Dropout(cfg.dropout if cfg.embed_dropout else 0.0)
        self.encoders = nn.ModuleDict(
            {
                m: nn.ModuleList(Block(h, cfg.n_head, cfg.ff_dim, cfg.dropout, norm_first=True) for _ in range(cfg.n_layer))
                for m in streams
            }
        )
        cross_dropout = cfg.dropout if cfg.cross_attn_dropout else 0.0
        self.bias_combine = nn.ModuleDict({m: BiasCombine(h, cfg.combiner, cross_dropout) for m in cfg.biased})
        # join_timestep (dtd 0.1): a table per modality added again at the join; goal rows read under join_all
        self.join_order = MODALITIES if cfg.join_all else ("state", "action")
        self.join_row = {m: i * cfg.max_ep_len for i, m in enumerate(streams)}
        self.time_join = nn.Embedding(len(streams) * cfg.max_ep_len, h) if cfg.join_timestep else None
        self.join_ln = nn.LayerNorm(h) if cfg.norm_joint else None
        self.join = nn.ModuleList(
            Block(h, cfg.join_n_head, cfg.join_ff_dim, cfg.dropout, norm_first=False) for _ in range(cfg.n_join_layer)
        )
        self.head = nn.Linear(h, cfg.act_dim)
        self.waypoint = nn.Linear(h, 2) if cfg.waypoint_head else None
        init_weights(self, "xavier" if cfg.init == "separate_qkv" else "authors")
        if cfg.head_init_scale != 1.0:  # a smaller start keeps tanh out of saturation (RESULTS.md diagnosis)
            with torch.no_grad():
                for p in self.head.parameters():
                    p.mul_(cfg.head_init_scale)

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
        cfg = self.config
        b, k, _ = states.shape
        t = timesteps.long().clamp(0, cfg.max_ep_len - 1)  # (B, K)
        attn: dict[str, Tensor] | None = {} if return_attention else None
        key_valid = key_valid_from_mask(mask) if return_attention else None  # (B, K) or None
        raw = {"goal": goals, "state": states, "action": actions}

        x = {}
        for m in cfg.streams:  # (B, K, H) each
            x[m] = self.embed[m](raw[m]) + self.time_in(t + self.time_row[m])
            if self.modality is not None:
                x[m] = x[m] + self.modality[MODALITIES.index(m)]
        x = self._embed_norm(x)

        for m in cfg.streams:
            h = self.drop(x[m])
            for i, layer in enumerate(self.encoders[m]):
                h, w = layer(h, key_valid=key_valid, return_attention=return_attention)
                if attn is not None:
                    attn[f"encoder.{m}.{i}"] = w
            x[m] = h
        waypoints = self.waypoint(x["goal"]) if self.waypoint is not None else None  # (B, K, 2)

        for m, module in self.bias_combine.items():
            x[m], w = module(x[m], x["goal"], key_valid, return_attention)
            if attn is not None:
                attn[f"bias.{m}"] = w

        n = len(self.join_order)
        if self.time_join is not None:
            x = {m: x[m] + self.time_join(t + self.join_row[m]) for m in self.join_order}
        z = torch.stack([x[m] for m in self.join_order], dim=2).reshape(b, n * k, -1)  # (B, nK, H)
        if self.join_ln is not None:
            z = self.join_ln(z)
        if not return_attention:  # the join's last layer computes only the state tokens read: s_at, or all s_t
            steps = at[:, None] if at is not None else torch.arange(k, device=z.device).expand(b, k)
            z = blocks_at(self.join, z, steps * n + self.join_order.index("state"), invariant=at is not None)
            actions = rowwise(lambda t: torch.tanh(self.head(t)), z, invariant=at is not None)  # (B, 1 or K, A)
            return ModelOutput(actions=actions, waypoints=waypoints)
        join_valid = key_valid_from_mask(mask, repeat=n) if return_attention else None
        for i, layer in enumerate(self.join):
            z, w = layer(z, key_valid=join_valid, return_attention=return_attention)
            if attn is not None:
                attn[f"join.{i}"] = w
        z = z.reshape(b, k, n, -1)[:, :, self.join_order.index("state")]  # (B, K, H) at s_t
        return ModelOutput(actions=torch.tanh(self.head(z)), waypoints=waypoints, attention=attn)

    def _embed_norm(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        mode = self.config.norm_mode
        if mode in ("n1", "n2"):
            return {m: self.emb_ln(v) for m, v in x.items()}
        if mode == "n3":
            return {m: self.emb_ln[m](v) for m, v in x.items()}
        return x
