"""The models: Decision Transducer (``dtd``), Decision Transformer (``dt-small``, ``dt-large``), BC (``bc``).

All share one interface (``SequenceModel``): ``forward(states, actions, goals, timesteps, mask=None,
return_attention=False) -> ModelOutput`` and the batched ``act(..., lengths) -> (N, A)``.
``build_model(name, **dataclasses.asdict(model.config))`` rebuilds any model (checkpoints).
"""

from __future__ import annotations

from typing import Any, Callable

from dtd.config import OptionText, check_model_options
from dtd.errors import DtdError
from dtd.model_configs import CONFIGS, BCConfig, DTConfig, DTdConfig
from dtd.models.bc import BCModel
from dtd.models.dt import DecisionTransformer
from dtd.models.dtd import DecisionTransducer
from dtd.models.transformer import ModelOutput, SequenceModel

# name -> (model class, config class, preset values over the config's defaults); the configs and presets
# live torch-free in dtd.model_configs, where dtd.config checks a run's model_options against them
_NETWORKS: dict[str, type] = {"dtd": DecisionTransducer, "dt-small": DecisionTransformer,
                              "dt-large": DecisionTransformer, "bc": BCModel}
MODELS: dict[str, tuple[type, type, dict]] = {name: (_NETWORKS[name], *CONFIGS[name]) for name in CONFIGS}
MODEL_NAMES = tuple(MODELS)


def build_model(
    name: str,
    state_dim: int,
    act_dim: int,
    goal_dim: int = 1,
    max_ep_len: int = 1000,
    context_len: int = 20,
    **overrides,
) -> SequenceModel:
    """Build a model by name; ``overrides`` set config fields by name, checked and typed by the one
    checker of run configs (``dtd.config.check_model_options``; a string is parsed as on the command
    line, so ``key=value`` text can be passed straight through)."""
    if name not in MODELS:
        raise DtdError(f"model: unknown model {name!r} (choose from {', '.join(MODELS)})")
    model_cls, config_cls, preset = MODELS[name]
    options = check_model_options(name, {k: OptionText(v) if isinstance(v, str) else v for k, v in overrides.items()})
    config = config_cls(
        state_dim=int(state_dim),
        act_dim=int(act_dim),
        goal_dim=int(goal_dim),
        max_ep_len=int(max_ep_len),
        context_len=int(context_len),
        **{**preset, **options},
    )
    return model_cls(config)


LAYER_OPTIONS = ("n_layer", "n_join_layer", "n_layers")  # counts of identical layers: parameters grow linearly


def count_parameters(build: Callable[..., Any], layers: dict[str, int]) -> int:
    """The parameters `build(**layers)` would have, without building it: on torch's meta device (nothing is
    allocated) at one and two of each layer count, extrapolated linearly, so 10**9 layers cost three small
    builds instead of 10**9 Python modules. Sizes too large to build at all are one DtdError."""
    import torch

    def params(**counts: int) -> int:
        try:
            with torch.device("meta"):
                return sum(p.numel() for p in build(**counts).parameters())
        except (TypeError, ValueError, OverflowError, RuntimeError) as exc:  # sizes past int64, ...
            raise DtdError(f"model: the sizes given are too large to build ({type(exc).__name__}: a tensor of "
                           "these sizes cannot exist)") from None

    one = {name: 1 for name in layers}
    base = params(**one)
    return base + sum((count - 1) * (params(**{**one, name: 2}) - base) for name, count in layers.items())


def rebuild_model(name: str, stored: dict) -> SequenceModel:
    """A model from the config a checkpoint stored (``model_kwargs``). A field an older version did
    not store takes the value that version used (the config class's ``LEGACY``), not today's default."""
    if name not in MODELS:
        raise DtdError(f"model: unknown model {name!r} (choose from {', '.join(MODELS)})")
    return build_model(name, **{**getattr(MODELS[name][1], "LEGACY", {}), **stored})


__all__ = [
    "MODELS",
    "MODEL_NAMES",
    "BCConfig",
    "BCModel",
    "DTConfig",
    "DTdConfig",
    "DecisionTransducer",
    "DecisionTransformer",
    "ModelOutput",
    "SequenceModel",
    "build_model",
    "count_parameters",
    "rebuild_model",
]
