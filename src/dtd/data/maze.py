"""Mazes: Gymnasium-Robotics PointMaze / AntMaze ids, a grid planner with a PD controller, and
``dtd data collect-maze``, which builds PointMaze datasets the way D4RL's maze2d and Minari's
pointmaze data were built (a planner picks waypoints towards a goal, a PD controller follows them,
the goal is resampled when reached, Gaussian action noise on top).

The maze state used everywhere in dtd is ``[observation, desired_goal]`` for PointMaze (xy, vxy,
goal xy) and ``[achieved_goal, observation, desired_goal]`` for AntMaze (xy first, as in D4RL's
antmaze): xy always sits in state[:2], so the goal token can be built from normalised states.
The goal xy is in the state too so that return-to-go models (DT) see which goal they must reach.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from dtd.data.episodes import Episode, EpisodeDataset
from dtd.data.minari_io import check_collect_args, dataset_destination, write_dataset
from dtd.envs import LAYOUTS, make_maze_env, maze_env_id
from dtd.errors import DtdError

TEMP_PREFIX = ".dtd-collect-maze-"  # + <pid>-<random>: the temporary Minari root next to the destination


class MazePlanner:
    """Breadth-first search over the free cells of a maze map; ``waypoint`` returns the xy the
    controller should head for: the centre of the next cell on the shortest path to the goal's
    cell (skipping cells already in line of sight along a row/column), or the goal itself."""

    def __init__(self, maze) -> None:
        self.maze = maze  # gymnasium_robotics Maze: maze_map, cell_xy_to_rowcol, cell_rowcol_to_xy
        self.free = np.array([[c != 1 for c in row] for row in maze.maze_map])  # (rows, cols)

    def cell(self, xy: np.ndarray) -> tuple[int, int]:
        i, j = self.maze.cell_xy_to_rowcol(xy)
        i = int(np.clip(i, 0, self.free.shape[0] - 1))
        j = int(np.clip(j, 0, self.free.shape[1] - 1))
        return i, j

    def path(self, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
        """Shortest list of cells from start to goal (both included); [start] when unreachable."""
        parent = {start: start}
        queue = deque([start])
        while queue:
            cur = queue.popleft()
            if cur == goal:
                break
            i, j = cur
            for nxt in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if nxt not in parent and 0 <= nxt[0] < self.free.shape[0] \
                        and 0 <= nxt[1] < self.free.shape[1] and self.free[nxt]:
                    parent[nxt] = cur
                    queue.append(nxt)
        if goal not in parent:
            return [start]
        cells = [goal]
        while cells[-1] != start:
            cells.append(parent[cells[-1]])
        return cells[::-1]

    def waypoint(self, xy: np.ndarray, goal_xy: np.ndarray) -> np.ndarray:
        cells = self.path(self.cell(xy), self.cell(goal_xy))
        if len(cells) <= 1:
            return np.asarray(goal_xy, dtype=np.float64)
        # go straight as long as the path keeps the first step's direction
        di, dj = cells[1][0] - cells[0][0], cells[1][1] - cells[0][1]
        k = 1
        while k + 1 < len(cells) and (cells[k + 1][0] - cells[k][0], cells[k + 1][1] - cells[k][1]) == (di, dj):
            k += 1
        if k == len(cells) - 1:
            return np.asarray(goal_xy, dtype=np.float64)
        return self.maze.cell_rowcol_to_xy(np.array(cells[k]))


class WaypointController:
    """PD controller towards the planner's waypoint, plus Gaussian action noise:
    a = clip(kp (w - xy) - kd v + N(0, noise^2), -1, 1)."""

    def __init__(self, planner: MazePlanner, kp: float = 10.0, kd: float = 1.0, noise: float = 0.0,
                 seed: int = 0) -> None:
        self.planner, self.kp, self.kd, self.noise = planner, kp, kd, noise
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: dict) -> np.ndarray:
        xy, vel = obs["observation"][:2], obs["observation"][2:4]
        target = self.planner.waypoint(xy, obs["desired_goal"])
        action = self.kp * (target - xy) - self.kd * vel
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, size=2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


DEFAULT_NOISE = {"point": 0.1, "ant": 0.2}  # D4RL's maze2d and antmaze


def collect_maze(layout: str, steps: int, seed: int = 0, noise: float | None = None, out: str | Path | None = None,
                 dataset_id: str | None = None, progress: bool = True, robot: str = "point",
                 policy: str | Path | None = None) -> Path:
    """Drive a maze's robot for ``steps`` steps and write a Minari dataset (dict observations, sparse
    reward w.r.t. the goal pursued, that goal stored per step as ``infos/goal``).

    PointMaze: the planner + PD controller in the continuing task (episodes of the env's time limit,
    the goal resampled whenever it is reached). AntMaze: the zoo PPO Ant ``policy`` steered along the
    planner's path (dtd.data.antmaze); an episode ends at the goal (terminated), at a flip (truncated,
    ``infos/flipped``) or at the time limit. Written to the folder ``out`` or, without it, to
    <Minari root>/<dataset_id>; built in a temporary Minari root next to it and renamed into place.
    """
    from minari.data_collector import EpisodeBuffer
    from tqdm import tqdm

    noise = DEFAULT_NOISE.get(robot, 0.1) if noise is None else noise
    check_collect_args(steps, noise, seed, "collect-maze: --{} must be {}, got {}")
    env_id = maze_env_id(layout, robot)
    if robot != "ant" and policy is not None:
        raise DtdError("collect-maze: --policy drives the Ant only (--robot ant); PointMaze uses the PD controller")
    if robot == "ant" and policy is None:
        raise DtdError("collect-maze: --robot ant needs --policy, the RL Zoo's PPO Ant "
                       "(ppo/Ant-v3_1/Ant-v3.zip, with its Ant-v3/vecnormalize.pkl)")
    dataset_id = dataset_id or f"dtd/{robot}maze-{layout}/planner-v0"
    dest = dataset_destination(dataset_id, out, "collect-maze: ", "{} already exists")  # before the rollout

    env = make_maze_env(env_id, episodic=robot == "ant")
    if robot == "ant":
        from dtd.data.antmaze import AntDriver

        driver = AntDriver(env, MazePlanner(env.unwrapped.maze), policy, noise, seed)
    else:
        driver = WaypointController(MazePlanner(env.unwrapped.maze), noise=noise, seed=seed)
    buffers, ep = [], None
    try:
        for t in tqdm(range(steps), desc=f"collect {env_id}", unit="step", disable=not progress):
            if ep is None:
                reset_seed = seed * 100_003 + len(buffers)
                obs, _ = env.reset(seed=reset_seed)
                getattr(driver, "reset", lambda: None)()
                ep = {"obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
            action = driver(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            flipped = robot == "ant" and not terminated and driver.flipped()
            ep["obs"].append(obs)
            ep["act"].append(action)
            ep["rew"].append(float(reward))
            ep["term"].append(bool(terminated))
            ep["trunc"].append(bool(truncated) or flipped or (t == steps - 1 and not terminated))
            if terminated or ep["trunc"][-1]:
                observations = {k: np.stack([o[k] for o in ep["obs"]]) for k in ep["obs"][0]}  # (T+1, .)
                infos = {"goal": observations["desired_goal"].astype(np.float32)}
                if robot == "ant":  # raised with the final observation (loaders keep it on the last step)
                    infos["flipped"] = np.zeros(len(ep["obs"]), dtype=bool)
                    infos["flipped"][-1] = flipped
                buffers.append(EpisodeBuffer(
                    id=len(buffers), seed=reset_seed, observations=observations,
                    actions=np.stack(ep["act"]), rewards=ep["rew"], terminations=ep["term"],
                    truncations=ep["trunc"], infos=infos))
                ep = None
        write_dataset(buffers, dest, dataset_id, env, TEMP_PREFIX, algorithm_name=f"dtd-{robot}maze-planner",
                      code_permalink="dtd data collect-maze", ref_min_score=0.0, ref_max_score=1.0,
                      description=_description(robot, env_id, noise, steps, seed))
    finally:
        env.close()
    return dest


def _description(robot: str, env_id: str, noise: float, steps: int, seed: int) -> str:
    if robot == "ant":
        how = ("the RL Zoo's PPO Ant (a forward runner) steered along BFS waypoints (2.5 m lookahead on the cell "
               "path's centre line) by rotating and mirroring the world it is shown, actions x0.75; episodes end "
               "at the goal, at a flip (truncated, infos/flipped) or at the time limit")
    else:
        how = "BFS waypoints over the maze grid, PD control (kp 10, kd 1), goal resampled when reached"
    return f"{env_id}: {how}; Gaussian action noise {noise}; {steps} steps, seed {seed}; made with dtd data collect-maze"


# ---- datasets: the maze state layout --------------------------------------------------------

D4RL_NAMES = {"maze2d": "point", "antmaze": "ant"}  # D4RL file-name prefix -> robot


def maze_robot(dataset) -> str | None:
    """'point' / 'ant' when a dataset is a maze one (by env id, else by D4RL-style name), else None."""
    env_id = dataset.env_id or ""
    if env_id.startswith("PointMaze_"):
        return "point"
    if env_id.startswith("AntMaze_"):
        return "ant"
    name = Path(str(dataset.name)).name.lower()
    return next((robot for prefix, robot in D4RL_NAMES.items() if name.startswith(prefix)), None)


def _env_id_from_name(name: str, robot: str) -> str | None:
    layout = next((k for k in LAYOUTS if k in name.lower()), None)
    return maze_env_id(layout, robot) if layout else None


def to_maze_dataset(dataset):
    """A loaded maze dataset -> the maze state layout ([xy, rest, goal xy], see the module doc).

    Minari mazes arrive as observation + goals (desired_goal) + infos/achieved_goal; AntMaze's
    observation lacks xy, so achieved_goal is put first. D4RL hdf5 files already start with xy and
    carry infos/goal; without a goal the trajectory's last xy is used (spec). Reference scores are
    set to (0, 1): an evaluation episode ends at the goal with return 1, so the normalised score is
    the success rate x100. Other datasets are returned unchanged.
    """
    robot = maze_robot(dataset)
    if robot is None or getattr(dataset, "maze_layout", False):
        return dataset
    episodes = []
    for ep in dataset.episodes:
        obs = ep.observations
        xy = ep.infos.get("achieved_goal")
        if xy is not None and not np.allclose(obs[:, :2], xy, atol=1e-5):
            obs = np.concatenate([xy, obs], axis=1)  # AntMaze (Minari): xy is not in the observation
        goals = ep.goals if ep.goals is not None else ep.infos.get("goal")
        if goals is None:
            goals = np.repeat(obs[-1:, :2], len(obs), axis=0)
        goals = np.asarray(goals, np.float32).reshape(len(obs), -1)[:, :2]
        episodes.append(Episode(np.concatenate([obs, goals], axis=1), ep.actions, ep.rewards, ep.terminals,
                                ep.timeouts, goals, ep.infos))
    env_id = dataset.env_id or _env_id_from_name(Path(str(dataset.name)).name, robot)
    out = EpisodeDataset(episodes, dataset.name, env_id, 0.0, 1.0)
    out.maze_layout = True
    return out
