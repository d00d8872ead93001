"""dtd.Policy: history, normalisation, return-to-go and bad-input handling, with a recording fake model."""

import numpy as np
import pytest
import torch

from dtd.errors import DtdError
from dtd.goals import ReturnToGo
from dtd.policy import Policy


class Recorder(torch.nn.Module):
    """act() returns (last state sum, last goal, last timestep) and keeps its inputs."""

    act_dim = 3

    def __init__(self):
        super().__init__()
        self.calls = []

    def act(self, states, actions, goals, timesteps, lengths):
        self.calls.append([x.clone() for x in (states, actions, goals, timesteps, lengths)])
        i = torch.arange(len(states))
        last = lengths - 1
        return torch.stack([states[i, last].sum(-1), goals[i, last, 0], timesteps[i, last].float()], -1)


def make(k=3, n_obs=2, **kw):
    model = Recorder()
    pol = Policy(model, state_mean=np.full(n_obs, 1.0), state_std=np.full(n_obs, 2.0),
                 goal_fn=ReturnToGo(100.0), target=50.0, context_len=k, **kw)
    return pol, model


def test_single_episode_history_goal_and_normalisation():
    pol, model = make(k=3)
    a = pol.act(np.array([3.0, 5.0]))  # normalised (1, 2) -> sum 3
    np.testing.assert_allclose(a, [3.0, 0.5, 0.0])
    for t, r in zip(range(1, 5), [10.0, 20.0, 5.0, 5.0]):
        a = pol.act(np.array([1.0, 1.0]) * t, r)
    states, actions, goals, steps, lengths = model.calls[-1]
    assert lengths.tolist() == [3]
    assert steps[0].tolist() == [2, 3, 4]  # the last K steps, oldest first
    np.testing.assert_allclose(goals[0, :, 0], [(50 - 30) / 100, (50 - 35) / 100, (50 - 40) / 100])
    np.testing.assert_allclose(a, [2 * (4 - 1) / 2, 0.1, 4.0], rtol=1e-6)
    # the previous actions fill the action slots; the current one is zero
    np.testing.assert_allclose(actions[0, 1], [2.0, 0.15, 3.0], rtol=1e-6)  # the action taken at t=3
    assert actions[0, 2].abs().sum() == 0


def test_short_window_is_right_padded_and_reset_starts_over():
    pol, model = make(k=4)
    pol.act([1.0, 1.0])
    pol.act([1.0, 1.0], 1.0)
    states, _, goals, steps, lengths = model.calls[-1]
    assert lengths.tolist() == [2] and steps[0].tolist() == [0, 1, 0, 0]
    assert goals[0, 2:].abs().sum() == 0
    pol.reset()
    a = pol.act([1.0, 1.0], reward=123.0)  # first step: reward ignored
    assert a[1] == pytest.approx(0.5) and a[2] == 0


def test_batch_rows_reset_independently():
    pol, model = make(k=2)
    obs = np.ones((3, 2))
    pol.act(obs)
    pol.act(obs, [1.0, 2.0, 3.0])
    pol.reset(np.array([False, True, False]))
    a = pol.act(obs, np.array([1.0, 1.0, 1.0]))
    assert a.shape == (3, 3)
    np.testing.assert_allclose(a[:, 2], [2, 0, 2])  # row 1 starts over at timestep 0
    np.testing.assert_allclose(a[:, 1], [0.48, 0.5, 0.46])
    assert model.calls[-1][4].tolist() == [2, 1, 2]


def test_timestep_clipped_to_max_ep_len():
    pol, model = make(k=2, max_ep_len=3)
    pol.act([0.0, 0.0])
    for _ in range(4):
        a = pol.act([0.0, 0.0], 0.0)
    assert a[2] == 2


@pytest.mark.parametrize("obs, msg", [
    (np.ones(3), "shape"), (np.ones((2, 5)), "shape"), (np.array([np.nan, 1.0]), "NaN"),
    (np.array([np.inf, 1.0]), "NaN"), ("abc", "numeric"),
])
def test_bad_observations(obs, msg):
    pol, _ = make()
    with pytest.raises(DtdError, match=msg):
        pol.act(obs)


def test_missing_reward_and_batch_size_change():
    pol, _ = make()
    pol.act(np.ones(2))
    with pytest.raises(DtdError, match="reward"):
        pol.act(np.ones(2))
    with pytest.raises(DtdError, match="NaN"):
        pol.act(np.ones(2), float("nan"))
    with pytest.raises(DtdError, match="reset"):
        pol.act(np.ones((4, 2)), 0.0)


# ---- a real run: Policy.load in a plain Gymnasium loop gives what `dtd eval` gets ---------------


@pytest.fixture(scope="module")
def run_dir(tiny_runs):
    return tiny_runs["dtd"]


def test_policy_in_a_gymnasium_loop_matches_the_evaluation_engine(run_dir):
    import dtd
    from dtd.envs import make_env
    from dtd.evaluation import EvalSettings, evaluate
    from dtd.runs import load_run

    env = make_env("Hopper-v5", max_episode_steps=25)
    policy = dtd.Policy.load(run_dir, target=1800)  # the README's five lines, plus bookkeeping
    obs, _ = env.reset(seed=7)
    reward, done, total = 0.0, False, 0.0
    while not done:
        obs, reward, term, trunc, _ = env.step(policy.act(obs, reward))
        done, total = term or trunc, total + reward
    model, info = load_run(run_dir)
    out = evaluate(model, EvalSettings(env_id="Hopper-v5", targets=[1800.0], episodes=1, seed=7, state_mean=info.state_mean,
                   state_std=info.state_std, reward_scale=info.reward_scale, context_len=4,
                   max_steps=25, batched=False, progress=False))
    assert total == pytest.approx(out["targets"]["1800"]["returns"][0], abs=1e-6)


def test_loaded_policy_rejects_bad_observations_and_batches(run_dir):
    from dtd.policy import Policy

    policy = Policy.load(run_dir)  # default target: the task's first (Hopper 3600)
    assert policy.target == 3600.0 and policy.context_len == 4
    with pytest.raises(DtdError, match=r"expected \(11,\)"):
        policy.act(np.zeros(17))
    actions = policy.act(np.zeros((5, 11)))
    assert actions.shape == (5, 3) and np.all(np.abs(actions) <= 1)
    np.testing.assert_allclose(actions, actions[:1].repeat(5, 0), atol=1e-6)  # same inputs, same actions
