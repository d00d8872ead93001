"""IQL: the expectile loss, the value-goal scaling, a few training steps, and the critic as a goal."""

import json

import numpy as np
import pytest
import torch

from dtd.data.episodes import Episode, EpisodeDataset
from dtd.errors import DtdError
from dtd.goals import ValueGoal, with_goals
from dtd.models.iql import IQL, IQLNetConfig, expectile_loss, scale_values
from dtd.config import IQLConfig
from dtd.runs import load_critic
from dtd.training.iql import iql_losses, train_iql, transitions


def test_expectile_loss_hand_computed():
    diff = torch.tensor([2.0, -1.0, 0.5, -3.0])
    # tau = 0.7: positive diffs weigh 0.7, negative 0.3 -> (0.7*4 + 0.3*1 + 0.7*0.25 + 0.3*9) / 4
    assert expectile_loss(diff, 0.7).item() == pytest.approx((2.8 + 0.3 + 0.175 + 2.7) / 4)
    assert expectile_loss(diff, 0.5).item() == pytest.approx(0.5 * (4 + 1 + 0.25 + 9) / 4)


def test_value_scaling():
    v = np.array([10.0, 5.0, 0.0, 12.0, -1.0])
    np.testing.assert_allclose(scale_values(v, large=10.0, small=0.0), [0.0, 0.5, 1.0, 0.0, 1.0])
    assert scale_values(np.array([3.0]), 3.0, 3.0)[0] == 0.0  # a flat value range does not divide by 0


def _chain_dataset(n_eps=4, T=6):
    """A 1-d walk towards x = T: reward 1 on the last (terminal) step."""
    eps = []
    for i in range(n_eps):
        x = np.arange(T, dtype=np.float32)[:, None] + 0.1 * i
        rew = np.zeros(T, np.float32)
        rew[-1] = 1.0
        eps.append(Episode(x, np.ones((T, 1)), rew, np.eye(T, dtype=bool)[-1], np.zeros(T, bool)))
    return EpisodeDataset(eps, "chain")


def test_transitions_drop_cut_last_step():
    ds = _chain_dataset(1, 4)
    ds.episodes[0].terminals[:] = False  # now a cut episode: its last step has no next state
    tr = transitions(ds)
    assert len(tr["r"]) == 3
    np.testing.assert_allclose(tr["s2"][:, 0], [1, 2, 3])


def test_iql_steps_lower_losses():
    torch.manual_seed(0)
    tr = {k: torch.from_numpy(v) for k, v in transitions(_chain_dataset()).items()}
    model = IQL(IQLNetConfig(1, 1, hidden=32, n_layers=3))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(150):
        losses = iql_losses(model, tr, discount=0.9, expectile=0.7, temperature=3.0)
        total = sum(losses.values())
        first = first or {k: v.item() for k, v in losses.items()}
        opt.zero_grad()
        total.backward()
        opt.step()
        model.update_targets(0.05)
    last = {k: v.item() for k, v in iql_losses(model, tr, 0.9, 0.7, 3.0).items()}
    assert last["q_loss"] < first["q_loss"] and last["actor_loss"] < first["actor_loss"]
    # V rises towards the rewarding end of the chain
    v = model.v(torch.tensor([[0.0], [5.0]]))
    assert v[1] > v[0]


def test_train_iql_run_and_value_goal(tmp_path, monkeypatch):
    import dtd.training.iql as iql

    monkeypatch.setattr(iql, "load_dataset", lambda s, download=False: _chain_dataset())
    cfg = IQLConfig(dataset="chain", steps=40, batch_size=16, model_options={"hidden": 16}, log_every=20,
                    out_dir=str(tmp_path), run_name="iql")
    run = train_iql(cfg, progress=False)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [20, 40] and all("value_loss" in x for x in lines)
    critic = load_critic(run)
    ds = _chain_dataset()
    tokens = critic.goal_tokens(np.concatenate([ep.observations for ep in ds.episodes]))
    assert tokens.min() == pytest.approx(0.0) and tokens.max() == pytest.approx(1.0)  # large/small span the data
    goal_ds = with_goals(ds, "iql", *ds.state_stats(), critic=critic)
    assert goal_ds.goal_dim == 1
    goal = ValueGoal(critic)
    obs = ds.episodes[0].observations[:3]
    np.testing.assert_allclose(goal.reset(1.0, obs), 1.0)
    np.testing.assert_allclose(goal.update(None, np.zeros(3), obs)[:, 0], critic.goal_tokens(obs))
    with pytest.raises(DtdError, match="run folder exists"):
        train_iql(cfg, progress=False)


def test_dt_and_dtd_train_with_iql_goal(tmp_path):
    from dtd.data.maze import collect_maze
    from dtd.config import load_config
    from dtd.training.trainer import train

    data = collect_maze("umaze", 300, seed=0, out=tmp_path / "umaze", progress=False)
    critic = train_iql(IQLConfig(dataset=str(data), steps=5, batch_size=16, model_options={"hidden": 16},
                                 out_dir=str(tmp_path), run_name="iql"), progress=False)
    for model in ("dtd", "dt-small"):
        cfg = load_config(None, dict(dataset=str(data), model=model, goal="iql", critic=str(critic), steps=3,
                                     batch_size=4, context_len=4, n_layer=1, warmup_steps=1, reward_scale=1.0,
                                     eval_targets=[1.0], eval_episodes=2, eval_max_steps=5, eval_untrained=False,
                                     out_dir=str(tmp_path / "runs"), run_name=model))
        out = train(cfg, progress=False).final
        assert out["env_id"] == "PointMaze_UMaze-v3" and len(out["targets"]["1"]["lengths"]) == 2
    with pytest.raises(DtdError, match="critic"):
        train(load_config(None, dict(dataset=str(data), goal="iql", steps=1, out_dir=str(tmp_path / "runs"))),
              progress=False)


def test_policy_commands_on_maze_and_iql_goal_runs(tmp_path, capsys):
    """dtd eval (also at a maze's fixed start and goal), export, attention and Policy on a maze-goal run and an
    IQL-goal run: each goal's token is rebuilt from the run record alone."""
    import dtd
    from dtd.cli import main
    from dtd.config import load_config
    from dtd.data.maze import collect_maze
    from dtd.envs import make_env
    from dtd.training.trainer import train

    data = collect_maze("umaze", 300, seed=0, out=tmp_path / "umaze", progress=False)
    critic = train_iql(IQLConfig(dataset=str(data), steps=5, batch_size=16, model_options={"hidden": 16},
                                 out_dir=str(tmp_path), run_name="iql"), progress=False)
    small = dict(dataset=str(data), steps=2, batch_size=4, context_len=4, n_layer=1, warmup_steps=1, eval_episodes=0,
                 eval_untrained=False, out_dir=str(tmp_path / "runs"))
    runs = {"maze": train(load_config("maze/pointmaze-umaze-dtd-b1", dict(small, run_name="maze")), progress=False),
            "iql": train(load_config(None, dict(small, model="dtd", goal="iql", critic=str(critic), reward_scale=1.0,
                                                eval_targets=[1.0], run_name="iql-goal")), progress=False)}
    for name, result in runs.items():
        run = str(result.run_dir)
        assert main(["eval", run, "--episodes", "2", "--max-steps", "5", "--device", "cpu"]) == 0
        assert main(["export", run, "--format", "torchscript", "--out", str(tmp_path / f"{name}.pt")]) == 0
        assert main(["attention", run, "--windows", "4", "--out", str(tmp_path / f"att-{name}")]) == 0
        assert (tmp_path / f"att-{name}" / "attention_summary.json").is_file()
        policy, env = dtd.Policy.load(run), make_env("PointMaze_UMaze-v3")
        obs, _ = env.reset(seed=0)
        action = policy.act(obs, 0.0)
        assert action.shape == env.action_space.shape and np.isfinite(action).all()
    maze = str(runs["maze"].run_dir)
    assert main(["eval", maze, "--fixed-goal", "--episodes", "2", "--max-steps", "5", "--device", "cpu"]) == 0
    fixed = json.loads((runs["maze"].run_dir / "eval-last-dtd_PointMaze_UMaze_D4RL-v3.json").read_text())
    assert fixed["env_id"] == "dtd/PointMaze_UMaze_D4RL-v3" and fixed["episodes"] == 2
    env = make_env(fixed["env_id"])
    grid = env.unwrapped.maze
    for seed in range(3):  # every episode: start in the top arm, goal in the bottom one (cells [1,1] -> [3,1])
        obs, _ = env.reset(seed=seed)
        assert grid.cell_xy_to_rowcol(obs[:2]).tolist() == [1, 1]
        assert grid.cell_xy_to_rowcol(obs[-2:]).tolist() == [3, 1]
    capsys.readouterr()
    assert main(["eval", maze, "--env", "Hopper-v5"]) == 2
    assert "do not match" in capsys.readouterr().err
