"""The models: Decision Transducer (``dtd``), Decision Transformer (``dt-small``, ``dt-large``), BC (``bc``).

All share one interface (``SequenceModel``): ``forward(states, actions, goals, timesteps, mask=None,
return_attention=False) -> ModelOutput`` and the batched ``act(..., lengths) -> (N, A)``.
``build_model(name, **dataclasses.asdict(model.config))`` rebuilds any model (checkpoints).
"""

from __future__ import annotations

from dataclasses import fields

from dtd.config import parse_bool
from dtd.errors import DtdError
from dtd.models.bc import BCConfig, BCModel
from dtd.models.dt import DecisionTransformer, DTConfig
from dtd.models.dtd import DecisionTransducer, DTdConfig
from dtd.models.transformer import ModelOutput, SequenceModel

# name -> (model class, config class, preset values over the config's defaults)
MODELS: dict[str, tuple[type, type, dict]] = {
    "dtd": (DecisionTransducer, DTdConfig, {}),
    "dt-small": (DecisionTransformer, DTConfig, {}),
    # "more heads, layers and a higher dimension" than dt-small, sized to the working DTd
    # (Hopper: 1,876,563 vs 1,852,419 parameters, +1.3%)
    "dt-large": (DecisionTransformer, DTConfig, {"hidden_size": 168, "n_layer": 5, "n_head": 4}),
    "bc": (BCModel, BCConfig, {}),
}
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
    """Build a model by name; ``overrides`` set config fields by name (strings are parsed to the
    field's type, so CLI ``key=value`` pairs can be passed straight through)."""
    if name not in MODELS:
        raise DtdError(f"model: unknown model {name!r} (choose from {', '.join(MODELS)})")
    model_cls, config_cls, preset = MODELS[name]
    defaults = {f.name: f.default for f in fields(config_cls)}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise DtdError(f"model {name}: unknown option(s) {', '.join(unknown)} (known: {', '.join(defaults)})")
    values = {**preset, **{k: _coerce(name, k, v, defaults[k]) for k, v in overrides.items()}}
    config = config_cls(
        state_dim=int(state_dim),
        act_dim=int(act_dim),
        goal_dim=int(goal_dim),
        max_ep_len=int(max_ep_len),
        context_len=int(context_len),
        **values,
    )
    return model_cls(config)


def rebuild_model(name: str, stored: dict) -> SequenceModel:
    """A model from the config a checkpoint stored (``model_kwargs``). A field an older version did
    not store takes the value that version used (the config class's ``LEGACY``), not today's default."""
    if name not in MODELS:
        raise DtdError(f"model: unknown model {name!r} (choose from {', '.join(MODELS)})")
    return build_model(name, **{**getattr(MODELS[name][1], "LEGACY", {}), **stored})


def _coerce(model: str, key: str, value, default):
    """Parse a string override to the type of the field's default (bool, int, float); else keep it."""
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            return parse_bool(value)
        return type(default)(value)
    except ValueError:
        raise DtdError(f"model {model}: {key}={value!r} is not a valid {type(default).__name__}") from None


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
    "rebuild_model",
]
