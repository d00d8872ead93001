"""Environments: every Gymnasium environment dtd makes, for collection and evaluation, in one place.

MuJoCo v5 tasks are made by id; the gymnasium-robotics mazes are registered on demand and wrapped to
the flat maze state models are trained on (xy first, goal xy last; see dtd.data.maze). A rollout runs
N copies together in one vector env. ``check_env_compat`` refuses, before any training, an
environment whose spaces do not fit a dataset.
"""

from __future__ import annotations

import numpy as np

from dtd.errors import DtdError

# Sync stepping is the default: on a small CPU the async workers' pipe traffic costs more than a
# MuJoCo step saves (measurements: BENCHMARKS.md).
DEFAULT_VECTOR = "sync"
LAYOUTS = {"umaze": "UMaze", "medium": "Medium", "large": "Large"}
ROBOTS = {"point": "PointMaze_{}-v3", "ant": "AntMaze_{}-v5"}


def make_env(env_id: str, **kwargs):
    """One Gymnasium environment by id (e.g. 'Hopper-v5'); unknown ids raise DtdError."""
    import gymnasium as gym

    _ensure_registered(env_id)
    if is_maze_env(env_id):  # episodic, flat maze-state observations
        return make_maze_eval_env(env_id, **kwargs)
    return gym.make(env_id, **kwargs)


def make_vector_env(env_id: str, num_envs: int, vector: str = DEFAULT_VECTOR, **kwargs):
    """N copies of an environment stepped together; ``vector`` is 'sync' (default here) or 'async'.

    Autoreset is Gymnasium's default (next step): a finished copy restarts on the following step,
    and the rollout simply ignores it from then on.
    """
    import gymnasium as gym

    _ensure_registered(env_id)
    fns = [lambda: make_env(env_id, **kwargs) for _ in range(num_envs)]
    if vector == "sync":
        return gym.vector.SyncVectorEnv(fns)
    if vector == "async":
        return gym.vector.AsyncVectorEnv(fns)
    raise DtdError(f"vector env: unknown kind {vector!r} (use 'sync' or 'async')")


def _ensure_registered(env_id: str) -> None:
    import gymnasium as gym

    if env_id in gym.registry:
        return
    try:  # the maze tasks live in gymnasium-robotics, which registers on import
        register_mazes()
    except ImportError:
        pass
    if env_id not in gym.registry:
        raise DtdError(f"{env_id}: unknown Gymnasium environment id")


# ---- mazes ------------------------------------------------------------------------------------


def maze_env_id(layout: str, robot: str = "point") -> str:
    """Gymnasium id of a D4RL maze, e.g. ("medium", "point") -> "PointMaze_Medium-v3"."""
    if layout not in LAYOUTS:
        raise DtdError(f"maze: unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if robot not in ROBOTS:
        raise DtdError(f"maze: unknown robot {robot!r} (choose from {', '.join(ROBOTS)})")
    return ROBOTS[robot].format(LAYOUTS[layout])


def is_maze_env(env_id: str | None) -> bool:
    return bool(env_id) and ("PointMaze_" in env_id or "AntMaze_" in env_id)


# D4RL's evaluation mazes: one start cell ('r') and one goal cell ('g'), the goal the far end of the maze (its
# antmaze test maps); Gymnasium-Robotics samples both from every free cell. Registered as dtd/<id>_D4RL-vN.
FIXED_CELLS = {"UMaze": ((1, 1), (3, 1)), "Medium": ((1, 1), (6, 6))}


def fixed_goal_id(env_id: str) -> str:
    """The D4RL-style fixed start and goal variant of a maze id, e.g. AntMaze_UMaze-v5 -> dtd/AntMaze_UMaze_D4RL-v5."""
    name, _, version = env_id.rpartition("-")
    if not is_maze_env(env_id) or name.split("_")[-1] not in FIXED_CELLS or env_id.startswith("dtd/"):
        raise DtdError(f"{env_id}: no fixed start and goal variant (mazes: {', '.join(FIXED_CELLS)})")
    return f"dtd/{name}_D4RL-{version}"


def register_mazes() -> None:
    """Register gymnasium-robotics' envs (the mazes) with Gymnasium, and dtd's fixed start/goal variants."""
    import gymnasium as gym
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    for robot in ROBOTS.values():
        for layout, (start, goal) in FIXED_CELLS.items():
            base = gym.spec(robot.format(layout))
            fixed = fixed_goal_id(base.id)
            if fixed in gym.registry:
                continue
            maze = [list(row) for row in base.kwargs["maze_map"]]
            maze[start[0]][start[1]], maze[goal[0]][goal[1]] = "r", "g"
            gym.register(fixed, entry_point=base.entry_point, max_episode_steps=base.max_episode_steps,
                         kwargs={**base.kwargs, "maze_map": maze})


def make_maze_env(env_id: str, episodic: bool = True, **kwargs):
    """A sparse-reward maze env. ``episodic`` ends the episode at the goal (evaluation: success =
    the goal was reached); otherwise the goal is resampled when reached (data collection)."""
    import gymnasium as gym

    register_mazes()
    if not is_maze_env(env_id):
        raise DtdError(f"maze: {env_id!r} is not a PointMaze/AntMaze id")
    if "AntMaze_" in env_id:
        kwargs.setdefault("include_cfrc_ext_in_observation", False)  # D4RL's 29-dim ant state
    try:
        return gym.make(env_id, reward_type="sparse", continuing_task=not episodic,
                        reset_target=not episodic, **kwargs)
    except gym.error.Error as exc:
        raise DtdError(f"maze: cannot make {env_id!r}: {exc}") from exc


def flatten_maze_obs(obs: dict, ant: bool) -> np.ndarray:
    """Dict observation (single or batched) -> the maze state (..., S), xy in [..., :2]."""
    parts = [obs["observation"], obs["desired_goal"]]
    if ant:
        parts.insert(0, obs["achieved_goal"])
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=-1)


def make_maze_eval_env(env_id: str, **kwargs):
    """The evaluation maze: episodic (ends at the goal, sparse reward 1 there, so the return is 1
    on success and 0 otherwise) with the flat maze-state observation models are trained on."""
    import gymnasium as gym

    env = make_maze_env(env_id, episodic=True, **kwargs)
    ant = "AntMaze_" in env_id
    dim = sum(env.observation_space[k].shape[0] for k in ("observation", "desired_goal")) + 2 * ant
    space = gym.spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32)
    return gym.wrappers.TransformObservation(env, lambda obs: flatten_maze_obs(obs, ant), space)


# ---- environment compatibility ----------------------------------------------------------------


def check_env_id(env_id: str) -> None:
    """Raise DtdError when Gymnasium does not know env_id."""
    import gymnasium as gym

    if is_maze_env(env_id):
        register_mazes()
    try:
        gym.spec(env_id)
    except Exception:
        raise DtdError(f"{env_id}: unknown environment id (e.g. Hopper-v5, HalfCheetah-v5)") from None


def check_env_compat(dataset, env_id: str) -> None:
    """Raise DtdError when env_id is unknown or its spaces do not match the dataset's dims (an
    EpisodeDataset, or anything with name, obs_dim and act_dim)."""
    import gymnasium as gym

    check_env_id(env_id)
    try:  # mazes: the flat maze-state observation models see
        env = make_maze_eval_env(env_id) if is_maze_env(env_id) else gym.make(env_id)
    except Exception as exc:
        raise DtdError(f"{env_id}: cannot create the environment ({type(exc).__name__}: {exc})") from None
    try:
        obs_space = env.observation_space
        if isinstance(obs_space, gym.spaces.Dict):
            obs_space = obs_space["observation"]
        obs_dim = int(np.prod(obs_space.shape))
        act_dim = int(np.prod(env.action_space.shape)) if env.action_space.shape else 1
    finally:
        env.close()
    if (obs_dim, act_dim) != (dataset.obs_dim, dataset.act_dim):
        raise DtdError(f"{dataset.name}: observation/action dims ({dataset.obs_dim}, {dataset.act_dim}) "
                       f"do not match {env_id}'s ({obs_dim}, {act_dim})")
