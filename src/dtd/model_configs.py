"""The models' config dataclasses (every option, type and default), torch-free.

``dtd.config`` checks a run's ``model_options`` against these classes when the config is read, and
``dtd train --help`` lists them, without importing torch; ``dtd.models`` builds the networks from them
(``dtd.models.MODELS[name][1]`` is the class here). Spec: shared/spec/decision-transducer.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from dtd.errors import DtdError

MODALITIES = ("goal", "state", "action")  # also the row order of the modality embedding
BIAS_ALIASES = {"b1": "left", "b2": "all"}  # the maze script's names
CHOICES = {
    "bias": ("b0", "left", "right", "all"),
    "combiner": ("c21", "c22", "c23"),
    "norm_mode": ("n0", "n1", "n2", "n3"),
    "timestep_tables": ("per_stream", "shared"),
    "init": ("authors", "separate_qkv"),
}

_GE1 = (">= 1", lambda v: v >= 1)
# the range of every numeric option and data field (as the error says it, test); nan fails every test
RANGES = {name: _GE1 for name in ("state_dim", "act_dim", "goal_dim", "max_ep_len", "context_len", "hidden_size",
                                  "n_layer", "n_head", "ff_dim", "n_join_layer", "join_n_head", "join_ff_dim",
                                  "ff_mult", "hidden", "n_layers")}
RANGES["dropout"] = ("in [0, 1)", lambda v: 0 <= v < 1)
HEADS = ("n_head", "join_n_head")  # attention heads split hidden_size evenly


def check_ranges(cfg) -> None:
    """Every option of a model config in its range, checked when the config is made (so when a run's config
    is read, before any work): ff_dim=0 or n_join_layer=-1 would build a network that learns nothing."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        rule, ok = RANGES.get(f.name, ("finite", lambda v: True))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                not ok(value) or not math.isfinite(value)):
            raise DtdError(f"model option {f.name} must be {rule}, got {value}")
    for heads in HEADS:
        n = getattr(cfg, heads, None)
        if n is not None and cfg.hidden_size % n:
            raise DtdError(f"model option hidden_size ({cfg.hidden_size}) must be a multiple of {heads} ({n})")


@dataclass
class DTdConfig:
    state_dim: int
    act_dim: int
    goal_dim: int = 1  # 1: return-to-go or value; 4: maze (xy now, xy goal)
    max_ep_len: int = 1000
    context_len: int = 20  # K, the training window (no positional table depends on it)
    hidden_size: int = 128  # token width
    n_layer: int = 3  # layers per modality encoder
    n_head: int = 1  # encoder heads
    ff_dim: int = 256  # encoder feed-forward
    n_join_layer: int = 1
    join_n_head: int = 2
    join_ff_dim: int = 512
    dropout: float = 0.1  # dropout rate of every dropout layer
    bias: str = "all"  # which streams the goal biases: b0 none | left (b1) state | right action | all (b2) both
    combiner: str = "c22"  # how a stream and its goal context combine: c21 linear | c22 GELU | c23 gated residual
    norm_mode: str = "n3"  # embedding LayerNorm: n0 none | n1 one shared | n2 over the stacked streams | n3 per stream
    modality_emb: bool = True  # add a learned vector per modality (goal, state, action) to its tokens
    join_all: bool = False  # the join interleaves (g, s, a) instead of (s, a)
    norm_joint: bool = False  # a LayerNorm on the interleaved sequence before the join
    # The options below default to the authors' working model; the other values are dtd 0.1's default
    # (LEGACY), kept as documented options for the diagnosis in RESULTS.md.
    timestep_tables: str = "shared"  # shared: one input table for all streams | per_stream: one each
    join_timestep: bool = False  # add per-modality timestep tables again at the join
    embed_dropout: bool = False  # dropout on the embedded streams before the encoders
    cross_attn_dropout: bool = False  # dropout on the goal cross-attention weights of BiasCombine
    init: str = "authors"  # authors: Xavier-normal as on a packed q/k/v, default biases | separate_qkv
    head_init_scale: float = 1.0  # the action head's initial weights and bias are multiplied by this
    waypoint_head: bool = False  # also predict the next waypoint's xy (maze goals)

    # values of the fields above for a config stored by dtd 0.1, which did not store them
    LEGACY: ClassVar[dict] = {"timestep_tables": "per_stream", "join_timestep": True, "embed_dropout": True,
                              "cross_attn_dropout": True, "init": "separate_qkv"}

    def __post_init__(self) -> None:
        self.bias = BIAS_ALIASES.get(self.bias, self.bias)
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise DtdError(f"dtd model: {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not (math.isfinite(self.head_init_scale) and self.head_init_scale > 0):
            raise DtdError(f"dtd model: head_init_scale must be a finite number > 0, got {self.head_init_scale}")
        if self.bias == "b0" and (self.join_all or self.waypoint_head):
            raise DtdError("dtd model: bias b0 has no goal stream, so join_all and waypoint_head are unavailable")
        check_ranges(self)

    @property
    def streams(self) -> tuple[str, ...]:
        """The encoded modalities: the goal is not used at all under b0."""
        return MODALITIES[1:] if self.bias == "b0" else MODALITIES

    @property
    def biased(self) -> tuple[str, ...]:
        return {"b0": (), "left": ("state",), "right": ("action",), "all": ("state", "action")}[self.bias]


@dataclass
class DTConfig:
    """Defaults = dt-small, the original DT's sizes. dt-large (preset in dtd.models): H 168, 5 layers,
    4 heads, the default DTd's parameter count within 1.3% (1,876,563 vs 1,852,419 for Hopper)."""

    state_dim: int
    act_dim: int
    goal_dim: int = 1
    max_ep_len: int = 1000
    context_len: int = 20  # K; no positional table depends on it (time comes from timesteps)
    hidden_size: int = 128  # token width
    n_layer: int = 3  # transformer blocks
    n_head: int = 1  # attention heads
    ff_mult: int = 4  # feed-forward width = ff_mult * hidden_size (GPT-2's n_inner)
    dropout: float = 0.1  # dropout rate of every dropout layer
    activation: str = "relu"  # relu | gelu; the original DT's gym runs use relu

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class BCConfig:
    """3 hidden layers of 256 (ReLU, dropout 0.1): the usual D4RL BC size, and a few times the
    original DT repository's 128-wide BC, so capacity is not what holds BC back.
    goal_dim, max_ep_len and context_len are kept only so every model builds from the same call."""

    state_dim: int
    act_dim: int
    goal_dim: int = 1
    max_ep_len: int = 1000
    context_len: int = 20
    hidden_size: int = 256  # hidden layer width
    n_layer: int = 3  # hidden layers
    dropout: float = 0.1  # dropout rate of every dropout layer

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class IQLNetConfig:
    state_dim: int
    act_dim: int
    hidden: int = 256  # MLP width
    n_layers: int = 3  # linear layers per MLP (the authors' value net: 3 layers of 256)

    def __post_init__(self) -> None:
        check_ranges(self)


# name -> (config class, preset values over the config's defaults); dtd.models adds the network class
CONFIGS: dict[str, tuple[type, dict]] = {
    "dtd": (DTdConfig, {}),
    "dt-small": (DTConfig, {}),
    # "more heads, layers and a higher dimension" than dt-small, sized to the working DTd
    # (Hopper: 1,876,563 vs 1,852,419 parameters, +1.3%)
    "dt-large": (DTConfig, {"hidden_size": 168, "n_layer": 5, "n_head": 4}),
    "bc": (BCConfig, {}),
}
# config fields that come from the data and the trainer's own fields, never from model_options
DATA_FIELDS = ("state_dim", "act_dim", "goal_dim", "max_ep_len", "context_len")
