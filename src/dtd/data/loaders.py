"""load_dataset(source): every supported file format -> one EpisodeDataset.

Sources (see `load_dataset`):
- a Minari dataset id from the local Minari root (MINARI_DATASETS_PATH), e.g. zoo/hopper/medium-v0
- the path of a Minari dataset folder (the one holding data/, or data/ itself)
- a D4RL hdf5 file (flat arrays, split into episodes at terminals | timeouts)
- a Decision-Transformer pickle (a list of per-trajectory dicts)
- "A+B": several of these joined (medium + expert = medium-expert)
- EMBEDDED_DATASET, the small Hopper-v5 dataset shipped in the package
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from dtd.data import refscores
from dtd.data.episodes import Episode, EpisodeDataset
from dtd.data.maze import to_maze_dataset
from dtd.errors import DtdError

EMBEDDED_DATASET = "embedded:hopper"
EMBEDDED_DIR = Path(__file__).resolve().parent / "embedded"
HDF5_SUFFIXES = (".hdf5", ".h5")
PICKLE_SUFFIXES = (".pkl", ".pickle")


def load_dataset(source: str, download: bool = False) -> EpisodeDataset:
    """Load a dataset by id, path or "A+B" combination; problems raise DtdError naming the source.

    `download=True` lets Minari fetch an id that is not in the local root (needs a network).
    """
    source = str(source).strip()
    if not source:
        raise DtdError("dataset: empty dataset name")
    parts = [source] if os.path.exists(source) else [p.strip() for p in source.split("+")]
    if not all(parts):
        raise DtdError(f"{source}: a '+' join needs a dataset on both sides of every '+'")
    if len(parts) == 1:
        return to_maze_dataset(_load_one(parts[0], download))
    return combine([to_maze_dataset(_load_one(p, download)) for p in parts], name=source)


def combine(datasets: list[EpisodeDataset], name: str) -> EpisodeDataset:
    """Join datasets of one environment; the reference scores come from the first."""
    first = datasets[0]
    for ds in datasets[1:]:
        if (ds.obs_dim, ds.act_dim, ds.goal_dim) != (first.obs_dim, first.act_dim, first.goal_dim):
            raise DtdError(f"{name}: {ds.name} has obs/act/goal dims {(ds.obs_dim, ds.act_dim, ds.goal_dim)} "
                           f"but {first.name} has {(first.obs_dim, first.act_dim, first.goal_dim)}")
        if ds.env_id and first.env_id and ds.env_id != first.env_id:
            raise DtdError(f"{name}: {ds.name} is for {ds.env_id} but {first.name} is for {first.env_id}")
    env_id = next((ds.env_id for ds in datasets if ds.env_id), None)
    episodes = [ep for ds in datasets for ep in ds.episodes]
    return EpisodeDataset(episodes, name, env_id, first.ref_min_score, first.ref_max_score)


def _load_one(source: str, download: bool) -> EpisodeDataset:
    if source.startswith("embedded:"):
        folder = EMBEDDED_DIR / source.split(":", 1)[1]
        if not (folder / "data").is_dir():
            known = sorted(p.name for p in EMBEDDED_DIR.iterdir() if (p / "data").is_dir())
            raise DtdError(f"{source}: no such embedded dataset (have: {', '.join(known) or 'none'})")
        return _load_minari_folder(folder, source)
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_minari_folder(path, source)
    if path.exists() and not path.is_file():  # a FIFO, a socket, a device: nothing dtd can read as a dataset
        raise DtdError(f"{source}: not a regular file or a folder (a dataset is a file, a Minari folder or an id)")
    if path.is_file():
        if path.suffix.lower() in HDF5_SUFFIXES:
            return load_d4rl_hdf5(path, source)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            return load_dt_pickle(path, source)
        raise DtdError(f"{source}: unknown file type {path.suffix!r} "
                       f"(expected {'/'.join(HDF5_SUFFIXES + PICKLE_SUFFIXES)} or a Minari folder)")
    if path.suffix.lower() in HDF5_SUFFIXES + PICKLE_SUFFIXES or source.startswith((".", "/", "~")):
        raise DtdError(f"{source}: no such file or directory")
    return _load_minari_id(source, download)


# ---- Minari -------------------------------------------------------------------------------


def _load_minari_id(dataset_id: str, download: bool) -> EpisodeDataset:
    import minari
    from minari.storage.datasets_root_dir import get_dataset_path

    root = get_dataset_path()
    try:
        ds = minari.load_dataset(dataset_id, download=download)
    except FileNotFoundError:
        raise DtdError(f"{dataset_id}: not a file, and no such Minari dataset in {root} "
                       "(set MINARI_DATASETS_PATH, or pass --download to fetch it)") from None
    except ValueError as exc:  # malformed id, unsupported version
        raise DtdError(f"{dataset_id}: {exc}") from None
    except Exception as exc:  # download failures come as many types
        raise DtdError(f"{dataset_id}: could not load the Minari dataset ({exc})") from None
    return _from_minari(ds, dataset_id)


def _load_minari_folder(path: Path, source: str) -> EpisodeDataset:
    """Read a Minari dataset folder with Minari's own dataset class."""
    from minari import MinariDataset

    data = path / "data" if (path / "data").is_dir() else path
    if not (data / "metadata.json").is_file():
        raise DtdError(f"{source}: a folder but not a Minari dataset (no data/metadata.json)")
    try:
        ds = MinariDataset(data)
    except Exception as exc:  # corrupt metadata/hdf5, unsupported version
        raise DtdError(f"{source}: cannot open the Minari dataset ({type(exc).__name__}: {exc})") from None
    return _from_minari(ds, source)


def _step_infos(values: np.ndarray, T: int) -> np.ndarray:
    """The first T of an episode's infos (Minari keeps T+1: the reset's, then one per step); a boolean flag raised
    with the final observation (a flip that ended the episode) is kept on the last step, not dropped."""
    out = np.asarray(values[:T])
    if out.dtype == bool and len(values) > T and np.asarray(values[T:]).any():
        out = out.copy()
        out[-1] = True
    return out


def _from_minari(ds, source: str) -> EpisodeDataset:
    """Minari episodes hold T+1 observations (the final one too); Episode keeps the first T."""
    episodes = []
    try:
        for ep in ds.iterate_episodes():
            T = len(ep.rewards)
            obs, goals, infos = ep.observations, None, {}
            if isinstance(obs, dict):  # goal-conditioned envs (mazes): observation/desired_goal/...
                goals = obs.get("desired_goal")
                goals = None if goals is None else goals[:T]
                infos = {k: np.asarray(v[:T]) for k, v in obs.items() if k not in ("observation", "desired_goal")}
                obs = obs["observation"]
            infos.update({k: _step_infos(v, T) for k, v in ep.infos.items()
                          if isinstance(v, np.ndarray) and len(v) >= T})
            _check_step_shapes(source, np.asarray(obs), np.asarray(ep.actions), ep.rewards)
            episodes.append(Episode(np.asarray(obs)[:T], ep.actions, ep.rewards, ep.terminations,
                                    ep.truncations, goals, infos))
    except DtdError:
        raise
    except Exception as exc:  # truncated/corrupt hdf5 surfaces while reading episodes
        raise DtdError(f"{source}: cannot read episodes ({type(exc).__name__}: {exc})") from None
    meta = ds.storage.metadata
    env_id = ds.env_spec.id if ds.env_spec is not None else None
    return EpisodeDataset(episodes, source, env_id, meta.get("ref_min_score"), meta.get("ref_max_score"))


# ---- D4RL hdf5 ------------------------------------------------------------------------------


def load_d4rl_hdf5(path: Path, source: str) -> EpisodeDataset:
    """A D4RL file: flat per-step arrays; an episode ends at a step with terminals | timeouts.

    Steps after the last terminal/timeout (an episode cut by the end of the file) are kept as a
    final episode marked as a timeout at its last step, as Minari marks an episode cut by the
    collection budget. Optional: next_observations (kept in infos), infos/goal -> Episode.goals,
    other infos/* arrays -> Episode.infos; file attributes env_id/ref_min_score/ref_max_score.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("observations", "actions", "rewards", "terminals") if k not in f]
            if missing:
                raise DtdError(f"{source}: not a D4RL hdf5 file (missing {', '.join(missing)})")
            data = {k: f[k][()] for k in ("observations", "actions", "rewards", "terminals")}
            N = len(data["rewards"])
            data["timeouts"] = f["timeouts"][()] if "timeouts" in f else np.zeros(N, bool)
            extras = {}
            if "next_observations" in f:
                extras["next_observations"] = f["next_observations"][()]
            if "infos" in f:
                for k, v in f["infos"].items():
                    if isinstance(v, h5py.Dataset) and v.shape[:1] == (N,):
                        extras[k] = v[()]
            attrs = dict(f.attrs)
    except DtdError:
        raise
    except Exception as exc:  # OSError for truncated/corrupt files
        raise DtdError(f"{source}: cannot read the hdf5 file ({type(exc).__name__}: {exc})") from None

    _check_step_shapes(source, data["observations"], data["actions"], data["rewards"])
    for k, v in {**data, **extras}.items():
        if len(v) != N:
            raise DtdError(f"{source}: {k} has {len(v)} steps but rewards has {N}")
    if N == 0:
        raise DtdError(f"{source}: the dataset is empty (no steps)")
    done = np.asarray(data["terminals"], bool) | np.asarray(data["timeouts"], bool)
    ends = np.flatnonzero(done) + 1
    if len(ends) == 0 or ends[-1] != N:
        ends = np.append(ends, N)
        data["timeouts"] = np.asarray(data["timeouts"], bool).copy()
        data["timeouts"][N - 1] = True
    episodes, start = [], 0
    for end in ends:
        sl = slice(start, end)
        goals = extras["goal"][sl] if "goal" in extras else None
        infos = {k: v[sl] for k, v in extras.items() if k != "goal"}
        episodes.append(_episode(source, data["observations"][sl], data["actions"][sl], data["rewards"][sl],
                                 data["terminals"][sl], data["timeouts"][sl], goals, infos))
        start = end
    return EpisodeDataset(episodes, source, *_env_and_refs(path, attrs))


# ---- Decision-Transformer pickle ------------------------------------------------------------


def load_dt_pickle(path: Path, source: str) -> EpisodeDataset:
    """A list of dicts with observations, actions, rewards and terminals (or dones) per trajectory.

    Optional keys: timeouts, goals, next_observations (-> infos). Only load pickles you trust:
    unpickling runs code.
    """
    try:
        with open(path, "rb") as fh:
            trajs = pickle.load(fh)
    except Exception as exc:
        raise DtdError(f"{source}: cannot unpickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(trajs, (list, tuple)) or not all(isinstance(t, dict) for t in trajs):
        raise DtdError(f"{source}: expected a list of trajectory dicts, got {type(trajs).__name__}")
    episodes = []
    for i, t in enumerate(trajs):
        missing = [k for k in ("observations", "actions", "rewards") if k not in t]
        if "terminals" not in t and "dones" not in t:
            missing.append("terminals (or dones)")
        if missing:
            raise DtdError(f"{source}: trajectory {i} lacks {', '.join(missing)}")
        rewards = np.asarray(t["rewards"])
        if rewards.ndim != 1 and not (rewards.ndim == 2 and rewards.shape[1] == 1):
            raise DtdError(f"{source}: trajectory {i} rewards have shape {rewards.shape}, expected (T,)")
        T = len(rewards)
        terminals = t["terminals"] if "terminals" in t else t["dones"]
        timeouts = t.get("timeouts", np.zeros(T, bool))
        infos = {"next_observations": t["next_observations"]} if "next_observations" in t else {}
        episodes.append(_episode(f"{source}: trajectory {i}", t["observations"], t["actions"], rewards,
                                 terminals, timeouts, t.get("goals"), infos))
    return EpisodeDataset(episodes, source, *_env_and_refs(path, {}))


def _check_step_shapes(where: str, observations, actions, rewards=None) -> None:
    """Each step's observation and action must be a 1-D vector: (T, dim) arrays (a (T,) action array is
    one action dimension), and its reward one number. Images, nested arrays or several rewards a step are
    refused by their shape instead of being flattened silently (and then miscounted)."""
    obs, act = np.asarray(observations), np.asarray(actions)
    rew = None if rewards is None else np.asarray(rewards)
    if rew is not None and not (rew.ndim == 1 or (rew.ndim == 2 and rew.shape[1] == 1)):
        raise DtdError(f"{where}: rewards have shape {rew.shape}; dtd needs (T,), one number a step")
    if obs.ndim != 2:
        raise DtdError(f"{where}: observations have shape {obs.shape}; dtd needs (T, obs_dim), one 1-D vector a step")
    if act.ndim not in (1, 2):
        raise DtdError(f"{where}: actions have shape {act.shape}; dtd needs (T, act_dim), one 1-D vector a step")


def _episode(where: str, *arrays) -> Episode:
    try:
        _check_step_shapes(where, arrays[0], arrays[1], arrays[2])
        ep = Episode(*arrays)
    except (ValueError, TypeError) as exc:
        raise DtdError(f"{where}: malformed arrays ({exc})") from None
    if ep.observations.ndim != 2 or ep.actions.ndim != 2:
        raise DtdError(f"{where}: observations/actions must be (T, dim) arrays")
    return ep


def _env_and_refs(path: Path, attrs: dict) -> tuple[str | None, float | None, float | None]:
    """env id from the file's attributes, else guessed from a D4RL-style name (hopper-medium-v2)."""
    env_id = attrs.get("env_id") or attrs.get("env_name")
    if isinstance(env_id, bytes):
        env_id = env_id.decode()
    if not env_id:
        env_id = refscores.GYM_IDS.get(refscores.env_key(path.stem) or "")
    ref_min, ref_max = attrs.get("ref_min_score"), attrs.get("ref_max_score")
    return (str(env_id) if env_id else None,
            None if ref_min is None else float(ref_min), None if ref_max is None else float(ref_max))
