"""Mazes: planner + controller, maze datasets (collector, D4RL antmaze hdf5), goal tokens, waypoints,
and a tiny train-and-evaluate run on PointMaze umaze."""

import h5py
import numpy as np
import pytest

from dtd.data import load_dataset
from dtd.data.maze import MazePlanner, WaypointController, collect_maze
from dtd.envs import LAYOUTS, make_maze_env, maze_env_id
from dtd.errors import DtdError
from dtd.goals import MazeGoal, maze_tokens, waypoint_targets, with_goals


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_planner_reaches_goal(layout):
    env = make_maze_env(maze_env_id(layout), episodic=True)
    controller = WaypointController(MazePlanner(env.unwrapped.maze))
    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        start = obs["achieved_goal"].copy()
        for _ in range(env.spec.max_episode_steps):
            obs, reward, terminated, truncated, info = env.step(controller(obs))
            if terminated or truncated:
                break
        assert terminated and info["success"] and reward == 1.0, (layout, seed, start, obs["achieved_goal"])


def test_planner_path_goes_around_walls():
    env = make_maze_env("PointMaze_UMaze-v3")
    planner = MazePlanner(env.unwrapped.maze)
    # U-maze: (1,1) -> (3,1) must go through the right column (1,3), (2,3), (3,3)
    path = planner.path((1, 1), (3, 1))
    assert path == [(1, 1), (1, 2), (1, 3), (2, 3), (3, 3), (3, 2), (3, 1)]
    # straight along row 1: the waypoint is the corner cell (1,3), not the next cell
    xy = env.unwrapped.maze.cell_rowcol_to_xy(np.array([1, 1]))
    goal = env.unwrapped.maze.cell_rowcol_to_xy(np.array([3, 1]))
    np.testing.assert_allclose(planner.waypoint(xy, goal), env.unwrapped.maze.cell_rowcol_to_xy(np.array([1, 3])))


def test_goal_tokens_and_waypoints_on_hand_made_trajectory():
    # states [x, y, vx, vy, gx, gy]; mean/std chosen so normalised values are easy to read
    obs = np.array([[0, 0, 0, 0, 4, 2], [1, 0, 0, 0, 4, 2], [2, 1, 0, 0, 4, 2], [3, 2, 0, 0, 4, 2], [4, 2, 0, 0, 4, 2]],
                   dtype=np.float32)
    mean = np.array([1, 1, 0, 0, 9, 9], np.float32)
    std = np.array([2, 1, 1, 1, 9, 9], np.float32)
    tokens = maze_tokens(obs, mean, std)
    np.testing.assert_allclose(tokens[0], [-0.5, -1.0, 1.5, 1.0])  # goal xy uses the xy statistics
    np.testing.assert_allclose(tokens[3], [1.0, 1.0, 1.5, 1.0])
    wp = waypoint_targets(obs, mean, std, ahead=3)
    np.testing.assert_allclose(wp, [[1.0, 1.0], [1.5, 1.0], [1.5, 1.0], [1.5, 1.0], [1.5, 1.0]])  # clipped at T-1
    wp1 = waypoint_targets(obs, mean, std, ahead=1)
    np.testing.assert_allclose(wp1[0], [0.0, -1.0])
    # the evaluation goal object gives the same tokens from observations
    goal = MazeGoal(mean, std)
    np.testing.assert_allclose(goal.reset(1.0, obs[:2]), tokens[:2])
    np.testing.assert_allclose(goal.update(None, np.zeros(2), obs[2:4]), tokens[2:4])
    with pytest.raises(DtdError):
        waypoint_targets(obs, mean, std, ahead=0)


def test_collect_maze_dataset_keeps_goals(tmp_path):
    out = collect_maze("umaze", 350, seed=0, out=tmp_path / "umaze", progress=False)
    ds = load_dataset(str(out))
    assert ds.env_id == "PointMaze_UMaze-v3" and ds.num_steps == 350 and ds.num_episodes == 2
    assert ds.obs_dim == 6 and ds.goal_dim == 2 and ds.reference_scores() == (0.0, 1.0)
    ep = ds.episodes[0]
    np.testing.assert_allclose(ep.observations[:, -2:], ep.goals)  # maze state = [obs, goal xy]
    np.testing.assert_allclose(ep.infos["goal"], ep.goals)
    assert ds.returns().sum() >= 1  # the planner reached goals
    with pytest.raises(DtdError, match="already exists"):
        collect_maze("umaze", 10, out=out, progress=False)
    with pytest.raises(DtdError, match="--noise must be >= 0, got nan"):
        collect_maze("umaze", 10, noise=float("nan"), out=tmp_path / "nan", progress=False)
    sampler_ds = with_goals(ds, "maze", *ds.state_stats())
    assert sampler_ds.goal_dim == 4


def test_d4rl_antmaze_hdf5_goal_per_step(tmp_path):
    path = tmp_path / "antmaze-umaze-v2.hdf5"
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(7, 29)).astype(np.float32)
    goals = np.repeat([[0.5, 8.0]], 7, axis=0)
    with h5py.File(path, "w") as f:
        f["observations"], f["actions"] = obs, rng.uniform(-1, 1, (7, 8))
        f["rewards"], f["terminals"] = np.zeros(7), np.zeros(7, bool)
        f["timeouts"] = np.array([0, 0, 1, 0, 0, 0, 1], bool)
        f["infos/goal"] = goals
    ds = load_dataset(str(path))
    assert ds.env_id == "AntMaze_UMaze-v5" and ds.num_episodes == 2 and ds.obs_dim == 31
    np.testing.assert_allclose(ds.episodes[1].observations[:, :29], obs[3:])
    np.testing.assert_allclose(ds.episodes[1].goals, goals[3:])


def test_train_and_evaluate_pointmaze_umaze(tmp_path):
    from dtd.config import load_config
    from dtd.training.trainer import train

    data = collect_maze("umaze", 400, seed=0, out=tmp_path / "umaze", progress=False)
    cfg = load_config("maze/pointmaze-umaze-dtd-b1", dict(
        dataset=str(data), steps=6, batch_size=4, context_len=4, n_layer=1, warmup_steps=1, log_every=3,
        eval_episodes=2, eval_max_steps=15, eval_untrained=False, out_dir=str(tmp_path / "runs"), run_name="r"))
    result = train(cfg, progress=False)
    out = result.final
    assert out["env_id"] == "PointMaze_UMaze-v3"
    t = out["targets"]["1"]
    assert "success_rate" in t and 0.0 <= t["success_rate"] <= 1.0 and len(t["lengths"]) == 2
    assert t["normalized_mean"] == pytest.approx(100 * t["success_rate"])
    assert (tmp_path / "runs" / "r" / "checkpoints" / "last.pt").is_file()


def test_maze_and_iql_presets_load():
    from dtd.config import PRESETS_DIR, load_config

    names = [p.relative_to(PRESETS_DIR).with_suffix("").as_posix()
             for sub in ("maze", "iql") for p in sorted((PRESETS_DIR / sub).glob("*.yaml")) if p.stem != "base"]
    assert len(names) == 18 + 6
    for name in names:
        cfg = load_config(name)
        assert cfg.goal in ("rtg", "maze", "iql") and cfg.env_id
        if cfg.goal == "maze":
            assert cfg.model_options["waypoint_head"] and cfg.model_options["bias"] in ("left", "all")
            assert cfg.waypoint == 3
