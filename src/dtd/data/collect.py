"""dtd data collect: roll a behaviour policy in a Gymnasium env and write a Minari dataset.

The dataset is written by Minari itself (minari.create_dataset_from_buffers; its DataCollector
wrapper would need jax) inside a temporary Minari root next to the destination, then renamed into
place, so an interrupted collection never leaves a half-written dataset. Policies: Stable-Baselines3 / sb3-contrib .zip files (the public
zoo agents were pickled with the old `gym` package) or uniform random actions.
"""

from __future__ import annotations

import json
import math
import sys
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from dtd.data import refscores
from dtd.data.minari_io import check_collect_args, dataset_destination, write_dataset
from dtd.envs import check_env_id
from dtd.errors import DtdError

Policy = Callable[[np.ndarray], np.ndarray]  # raw env observation (S,) -> action (A,)
TEMP_PREFIX = ".dtd-collect-"  # + <pid>-<random>: the temporary Minari root next to the destination

SB3_ALGOS = {  # algorithm name -> (module, class)
    "a2c": ("stable_baselines3", "A2C"), "ppo": ("stable_baselines3", "PPO"),
    "sac": ("stable_baselines3", "SAC"), "td3": ("stable_baselines3", "TD3"),
    "ddpg": ("stable_baselines3", "DDPG"), "dqn": ("stable_baselines3", "DQN"),
    "tqc": ("sb3_contrib", "TQC"), "trpo": ("sb3_contrib", "TRPO"),
    "ars": ("sb3_contrib", "ARS"), "qrdqn": ("sb3_contrib", "QRDQN"),
    "recurrentppo": ("sb3_contrib", "RecurrentPPO"),
}


def alias_gym_to_gymnasium() -> None:
    """Old SB3 pickles import `gym`; point those module names at gymnasium."""
    import importlib

    for name in ("gym", "gym.spaces", "gym.spaces.box", "gym.spaces.discrete", "gym.spaces.dict"):
        sys.modules.setdefault(name, importlib.import_module("gymnasium" + name[3:]))


def detect_algorithm(zip_path: Path) -> str:
    """The SB3 algorithm of a saved model, from its policy class module or its saved attributes."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            data = json.loads(zf.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as exc:  # ValueError: not JSON, not UTF-8
        raise DtdError(f"{zip_path}: not a Stable-Baselines3 model file ({exc})") from None
    if not isinstance(data, dict):
        raise DtdError(f"{zip_path}: not a Stable-Baselines3 model file (its 'data' member is a JSON "
                       f"{type(data).__name__}, not an object)")
    policy_class = data.get("policy_class")
    module = str(policy_class.get("__module__", "")) if isinstance(policy_class, dict) else ""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in SB3_ALGOS:  # stable_baselines3.sac.policies
        return parts[1]
    # on-policy algorithms share stable_baselines3.common.policies: tell them apart by attributes
    if "cg_max_steps" in data:
        return "trpo"
    if "clip_range" in data:
        return "ppo"
    if "n_steps" in data:
        return "a2c"
    raise DtdError(f"{zip_path}: cannot tell the algorithm (policy module {module!r}); pass --algo")


def load_sb3_policy(path: str | Path, deterministic: bool = False, algo: str | None = None,
                    vecnormalize: str | Path | None = None, seed: int = 0, env=None) -> Policy:
    """A policy function from an SB3 .zip; vecnormalize.pkl next to it (zoo layout) is used if found.

    With `env`, the policy's observation and action spaces (and the VecNormalize statistics) must
    fit that environment's, checked before any rollout."""
    import importlib

    path = Path(path)
    if not path.is_file():
        raise DtdError(f"{path}: no such policy file")
    algo = (algo or detect_algorithm(path)).lower()
    if algo not in SB3_ALGOS:
        raise DtdError(f"{path}: unknown algorithm {algo!r} (known: {', '.join(sorted(SB3_ALGOS))})")
    alias_gym_to_gymnasium()
    module, cls = SB3_ALGOS[algo]
    Algo = getattr(importlib.import_module(module), cls)
    custom = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    try:
        model = Algo.load(str(path), custom_objects=custom, device="cpu")
    except Exception as exc:
        raise DtdError(f"{path}: cannot load the {cls} model ({type(exc).__name__}: {exc})") from None
    model.set_random_seed(seed)
    if env is not None:
        _check_policy_spaces(model, env, path)

    if vecnormalize is None:  # zoo layout: <Env>.zip + <Env>/vecnormalize.pkl
        candidate = path.with_suffix("") / "vecnormalize.pkl"
        vecnormalize = candidate if candidate.is_file() else None
    elif not Path(vecnormalize).is_file():
        raise DtdError(f"{vecnormalize}: no such VecNormalize file")
    obs_shape = getattr(model.observation_space, "shape", None)
    normalize = _obs_normalizer(Path(vecnormalize), obs_shape) if vecnormalize else (lambda o: o)

    def policy(obs: np.ndarray) -> np.ndarray:
        action, _ = model.predict(normalize(obs), deterministic=deterministic)
        return action

    return policy


def _check_policy_spaces(model, env, path: Path) -> None:
    """The saved policy must see the observations and make the actions of the env it will drive."""
    for what, mine, theirs in (("observation", model.observation_space, env.observation_space),
                               ("action", model.action_space, env.action_space)):
        if getattr(mine, "shape", None) != getattr(theirs, "shape", None) or type(mine).__name__ != type(theirs).__name__:
            raise DtdError(f"{path}: the policy's {what} space {mine} does not match {env.spec.id}'s {theirs}")


def _obs_normalizer(path: Path, obs_shape: tuple | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """clip((obs - mean) / sqrt(var + eps), -clip, clip) from a pickled SB3 VecNormalize; its statistics
    must have the policy's observation shape."""
    import pickle

    alias_gym_to_gymnasium()
    try:
        with open(path, "rb") as fh:
            vn = pickle.load(fh)
        mean, var = np.asarray(vn.obs_rms.mean), np.asarray(vn.obs_rms.var)
        eps, clip = float(vn.epsilon), float(vn.clip_obs)
        enabled = bool(getattr(vn, "norm_obs", True))
    except Exception as exc:
        raise DtdError(f"{path}: cannot read the VecNormalize statistics ({type(exc).__name__}: {exc})") from None
    if obs_shape is not None and enabled and (mean.shape != tuple(obs_shape) or var.shape != tuple(obs_shape)):
        raise DtdError(f"{path}: VecNormalize statistics of shape {mean.shape} do not fit the policy's "
                       f"observations {tuple(obs_shape)}")
    if not enabled:
        return lambda o: o
    return lambda o: np.clip((o - mean) / np.sqrt(var + eps), -clip, clip).astype(np.float32)


def random_policy(action_space, seed: int) -> Policy:
    action_space.seed(seed)
    return lambda obs: action_space.sample()


def collect(env_id: str, policy: str, steps: int, seed: int = 0, out: str | Path | None = None,
            dataset_id: str | None = None, deterministic: bool = False, noise: float = 0.0,
            ref_min: float | None = None, ref_max: float | None = None, algo: str | None = None,
            vecnormalize: str | Path | None = None, compress: bool = True,
            description: str | None = None, progress: bool = True) -> Path:
    """Collect `steps` transitions with `policy` (an SB3 .zip path or "random") into a Minari dataset.

    The dataset goes to the folder `out`, or to <Minari root>/<dataset_id> when `out` is None.
    Returns that folder. ref_min/ref_max default to D4RL's constants for the env.
    """
    import gymnasium as gym

    check_collect_args(steps, noise, seed)
    dataset_id = dataset_id or f"dtd/{refscores.env_key(env_id) or 'env'}/collected-v0"
    dest = dataset_destination(dataset_id, out)
    if ref_min is None and ref_max is None and refscores.ref_scores(env_id):
        ref_min, ref_max = refscores.ref_scores(env_id)
    check_ref_scores(ref_min, ref_max)
    if policy == "random" and (vecnormalize is not None or algo is not None or deterministic):
        raise DtdError("--vecnormalize, --algo and --deterministic apply to an SB3 policy, not to --policy random")

    check_env_id(env_id)
    env = gym.make(env_id)
    try:
        check_flat_spaces(env, env_id)
        if policy == "random":
            act, algorithm = random_policy(env.action_space, seed), "random"
        else:
            act = load_sb3_policy(policy, deterministic, algo, vecnormalize, seed, env=env)
            kind = "deterministic" if deterministic else "sampled"
            algorithm = f"sb3-{algo or detect_algorithm(Path(policy))}-{kind}"
        buffers = rollout(env, act, steps, noise, np.random.default_rng(seed), progress)
        desc = description or (f"{algorithm} policy {policy}, {steps} steps, seed {seed}, "
                               f"action noise {noise}; made with dtd data collect")
        write_dataset(buffers, dest, dataset_id, env, TEMP_PREFIX, compress=compress,
                      code_permalink="dtd data collect", algorithm_name=algorithm, description=desc, ref_min_score=ref_min,
                      ref_max_score=ref_max)
    finally:
        env.close()
    return dest


def check_ref_scores(ref_min: float | None, ref_max: float | None) -> None:
    """Reference returns for the normalised score: both or neither, finite, random below expert."""
    if (ref_min is None) != (ref_max is None):
        raise DtdError("--ref-min/--ref-max: give both or neither")
    if ref_min is None:
        return
    if not (math.isfinite(ref_min) and math.isfinite(ref_max)):
        raise DtdError(f"--ref-min/--ref-max: must be finite, got {ref_min} and {ref_max}")
    if ref_min >= ref_max:
        raise DtdError(f"--ref-min ({ref_min:g}) must be below --ref-max ({ref_max:g})")


def check_flat_spaces(env, env_id: str) -> None:
    """dtd datasets hold 1-D observation and action vectors (Box spaces); refuse anything else rather
    than flatten images or dicts silently."""
    import gymnasium as gym

    for what, space in (("observation", env.observation_space), ("action", env.action_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise DtdError(f"{env_id}: its {what} space {space} is not a 1-D Box; dtd data collect records "
                           "flat observation and action vectors only")


def rollout(env, act: Policy, steps: int, noise: float, rng: np.random.Generator,
            progress: bool = True) -> list:
    """Step `env` for `steps` transitions; one minari EpisodeBuffer per episode (T+1 observations).

    The episode that the budget cuts is kept and marked truncated, as Minari's DataCollector does.
    """
    from minari.data_collector import EpisodeBuffer
    from tqdm import tqdm

    space = env.action_space
    buffers = []
    ep: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "term", "trunc")}
    reset_seed = int(rng.integers(2**31))
    obs, _ = env.reset(seed=reset_seed)
    for t in tqdm(range(steps), desc=f"collect {env.spec.id}", unit="step", disable=not progress):
        action = np.asarray(act(obs), dtype=np.float64)
        if noise > 0:
            action = action + noise * rng.standard_normal(action.shape)
        action = np.clip(action, space.low, space.high).astype(space.dtype)
        ep["obs"].append(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        ep["act"].append(action)
        ep["rew"].append(float(reward))
        ep["term"].append(bool(terminated))
        ep["trunc"].append(bool(truncated) or (t == steps - 1 and not terminated))
        if terminated or ep["trunc"][-1]:
            buffers.append(EpisodeBuffer(
                id=len(buffers), seed=reset_seed, observations=np.stack(ep["obs"] + [obs]),
                actions=np.stack(ep["act"]), rewards=ep["rew"], terminations=ep["term"],
                truncations=ep["trunc"], infos={}))
            ep = {k: [] for k in ep}
            reset_seed = int(rng.integers(2**31))
            obs, _ = env.reset(seed=reset_seed)
    return buffers
