"""The AntMaze collector's steering rests on two exact symmetries of the Ant: a rotation about the vertical
axis and the left-right mirror. A rollout started from the transformed state under the transformed actions
must be the transformed rollout."""

from pathlib import Path

import numpy as np
import pytest

from dtd.data import antmaze

ZOO_ANT = Path(__file__).resolve().parents[2] / "shared" / "zoo" / "ppo" / "Ant-v3_1" / "Ant-v3.zip"


def _ant(env_id: str = "Ant-v5"):
    import gymnasium as gym

    if env_id.startswith("AntMaze"):
        from dtd.envs import make_maze_env

        env = make_maze_env(env_id)
        env.reset(seed=0)
        return env.unwrapped.ant_env
    env = gym.make(env_id)
    env.reset(seed=0)
    return env.unwrapped


def _rollout(env, qpos, qvel, actions):
    env.set_state(qpos, qvel)
    states = []
    for a in actions:
        env.do_simulation(a, env.frame_skip)
        states.append((env.data.qpos.copy(), env.data.qvel.copy()))
    return states


def _start(env, rng):
    qpos = env.init_qpos + rng.uniform(-0.1, 0.1, env.model.nq)
    qpos[3:7] /= np.linalg.norm(qpos[3:7])
    return qpos, env.init_qvel + rng.normal(0, 0.3, env.model.nv)


@pytest.mark.parametrize("env_id", ["Ant-v5", "AntMaze_UMaze-v5"])
def test_mirrored_rollout_is_the_rollout_mirrored(env_id):
    env, rng = _ant(env_id), np.random.default_rng(0)
    mirror = antmaze.AntMirror(env.model)
    qpos, qvel = _start(env, rng)
    actions = rng.uniform(-1, 1, (60, env.model.nu))
    original = _rollout(env, qpos, qvel, actions)
    mirrored = _rollout(env, *mirror.state(qpos, qvel), [mirror.action(a) for a in actions])
    for (p, v), (mp, mv) in zip(original, mirrored):
        want_p, want_v = mirror.state(p, v)
        np.testing.assert_allclose(mp, want_p, atol=1e-9)
        np.testing.assert_allclose(mv, want_v, atol=1e-9)
    assert np.abs(original[-1][0][:2] - original[0][0][:2]).max() > 0.05  # the Ant did move


def test_mirror_swaps_legs_and_negates_hips():
    mirror = antmaze.AntMirror(_ant().model)
    # hinge order: hip_1, ankle_1, hip_2, ankle_2, hip_3, ankle_3, hip_4, ankle_4
    assert mirror.perm.tolist() == [6, 7, 4, 5, 2, 3, 0, 1]
    assert mirror.sign.tolist() == [-1, 1, -1, 1, -1, 1, -1, 1]
    q = np.arange(1.0, 9.0)
    np.testing.assert_array_equal(mirror.joints(mirror.joints(q)), q)


@pytest.mark.parametrize("angle", [0.7, -2.0, np.pi])
def test_rotated_rollout_is_the_rollout_rotated(angle):
    env, rng = _ant(), np.random.default_rng(1)
    qpos, qvel = _start(env, rng)
    actions = rng.uniform(-1, 1, (60, env.model.nu))
    original = _rollout(env, qpos, qvel, actions)
    rotated = _rollout(env, *antmaze.rotate_state(qpos, qvel, angle), actions)
    for (p, v), (rp, rv) in zip(original, rotated):
        want_p, want_v = antmaze.rotate_state(p, v, angle)
        np.testing.assert_allclose(rp, want_p, atol=1e-9)
        np.testing.assert_allclose(rv, want_v, atol=1e-9)


@pytest.mark.skipif(not ZOO_ANT.is_file(), reason="needs ../shared/zoo (the PPO Ant)")
def test_steering_is_invariant_to_the_world_heading():
    """The policy sees the same thing when the world and the commanded direction turn together."""
    env, rng = _ant(), np.random.default_rng(2)
    steer = antmaze.SteeredAnt(ZOO_ANT, env.model)
    qpos, qvel = _start(env, rng)
    for theta, turn in ((0.3, 1.1), (-2.5, -0.8)):  # a left and a right (mirrored) command
        steer.reset()
        a = steer(qpos, qvel, theta)
        steer.reset()
        b = steer(*antmaze.rotate_state(qpos, qvel, turn), theta + turn)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_path_follower_looks_ahead_along_the_cell_path():
    from dtd.data.maze import MazePlanner
    from dtd.envs import make_maze_env

    env = make_maze_env("AntMaze_UMaze-v5").unwrapped
    follower = antmaze.PathFollower(MazePlanner(env.maze))
    goal = env.maze.cell_rowcol_to_xy(np.array([3, 1]))
    start = env.maze.cell_rowcol_to_xy(np.array([1, 1]))  # the U's other arm: the path goes round
    target = follower.target(start, goal)
    assert np.linalg.norm(target - start) == pytest.approx(antmaze.LOOKAHEAD)
    assert target[0] > start[0]  # towards the bend, not through the wall at the goal
    near = goal + np.array([0.5, 0.0])
    np.testing.assert_allclose(follower.target(near, goal), goal)


def test_walls_push_the_heading_away():
    from dtd.data.maze import MazePlanner
    from dtd.envs import make_maze_env

    env = make_maze_env("AntMaze_UMaze-v5").unwrapped
    follower = antmaze.PathFollower(MazePlanner(env.maze))
    start = env.maze.cell_rowcol_to_xy(np.array([1, 1]))
    goal = env.maze.cell_rowcol_to_xy(np.array([1, 3]))  # straight east along the top corridor
    assert follower.direction(start, goal) == pytest.approx(0.0, abs=1e-9)  # centred: no push
    near_north_wall = start + np.array([0.0, 1.2])  # 0.8 m from the wall above
    assert follower.direction(near_north_wall, goal) < -0.1  # heads east and away (south)


def test_a_flag_raised_with_the_final_observation_stays_on_the_last_step():
    """Minari keeps T+1 infos per episode and dtd the first T: a flip reported with the final observation (the
    first AntMaze datasets' infos/flipped) must not be dropped."""
    from dtd.data.loaders import _step_infos

    flags = np.array([False, False, False, True])  # T = 3 steps, raised with the final observation
    assert _step_infos(flags, 3).tolist() == [False, False, True]
    assert _step_infos(np.zeros(4, bool), 3).tolist() == [False] * 3
    goals = np.arange(8.0).reshape(4, 2)  # other infos: the first T, untouched
    np.testing.assert_array_equal(_step_infos(goals, 3), goals[:3])


def test_collect_maze_refuses_a_policy_for_the_wrong_robot(tmp_path):
    from dtd.data.maze import collect_maze
    from dtd.errors import DtdError

    with pytest.raises(DtdError, match="needs --policy"):
        collect_maze("umaze", 10, robot="ant", out=tmp_path / "a", progress=False)
    with pytest.raises(DtdError, match="drives the Ant only"):
        collect_maze("umaze", 10, robot="point", policy="x.zip", out=tmp_path / "p", progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not ZOO_ANT.is_file(), reason="needs ../shared/zoo (the PPO Ant)")
def test_ant_collection_is_the_same_data_from_the_same_seed(tmp_path):
    """experiments/goals.py rebuilds a recorded AntMaze dataset from its seed on a new machine and checks it
    against the record: that needs the collector (policy, noise, steering, flips) to be a function of the seed."""
    from dtd.data.loaders import load_dataset
    from dtd.data.maze import collect_maze

    a, b, c = (load_dataset(str(collect_maze("umaze", 600, seed=s, out=tmp_path / f"d{i}", robot="ant",
                                             policy=ZOO_ANT, progress=False)))
               for i, s in enumerate((3, 3, 4)))
    assert a.num_steps == b.num_steps == 600 and a.num_episodes == b.num_episodes
    for x, y in zip(a.episodes, b.episodes):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.terminals, y.terminals)
    assert not np.array_equal(a.episodes[0].actions, c.episodes[0].actions[:len(a.episodes[0].actions)])
