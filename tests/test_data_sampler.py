"""SequenceSampler on hand-made episodes whose windows can be checked by hand."""

import numpy as np
import pytest

from dtd.data.episodes import Episode, EpisodeDataset
from dtd.data.sampler import SequenceSampler, reward_to_go, top_episodes
from dtd.errors import DtdError


def make_episode(T: int, reward: float = 1.0, obs_offset: float = 0.0) -> Episode:
    obs = obs_offset + np.arange(T * 2, dtype=np.float32).reshape(T, 2)  # s_t = (2t, 2t+1) + offset
    acts = np.full((T, 1), 0.5, np.float32)
    rewards = np.full(T, reward, np.float32)
    term = np.zeros(T, bool)
    term[-1] = True
    return Episode(obs, acts, rewards, term, np.zeros(T, bool))


def test_reward_to_go_by_hand():
    np.testing.assert_allclose(reward_to_go(np.array([1.0, 2.0, 3.0])), [6.0, 5.0, 3.0])


def test_padding_mask_and_rtg_by_hand():
    # one episode of 3 steps with rewards 1,2,3; K=5 -> every window is right-padded
    ep = Episode(np.array([[0.0], [1.0], [2.0]]), np.array([[0.1], [0.2], [0.3]]),
                 np.array([1.0, 2.0, 3.0]), np.array([0, 0, 1]), np.zeros(3))
    ds = EpisodeDataset([ep], "hand")
    s = SequenceSampler(ds, context_len=5, reward_scale=10.0, max_ep_len=2,
                        state_mean=np.zeros(1), state_std=np.ones(1), seed=0)
    b = s.sample(64)
    assert b["states"].shape == (64, 5, 1) and b["goals"].shape == (64, 5, 1)
    assert b["actions"].shape == (64, 5, 1) and b["timesteps"].dtype == np.int64
    starts = b["states"][:, 0, 0].astype(int)  # state value == step index
    assert set(starts) == {0, 1, 2}  # start uniform over [0, len-1]
    rtg = np.array([6.0, 5.0, 3.0]) / 10.0
    for i, st in enumerate(starts):
        n = 3 - st
        np.testing.assert_array_equal(b["mask"][i], [1] * n + [0] * (5 - n))
        np.testing.assert_allclose(b["goals"][i, :n, 0], rtg[st:])
        np.testing.assert_allclose(b["actions"][i, :n, 0], [0.1, 0.2, 0.3][st:], rtol=1e-6)
        np.testing.assert_array_equal(b["timesteps"][i, :n], np.minimum(np.arange(st, 3), 1))  # clipped
        for key in ("states", "actions", "goals"):
            assert not b[key][i, n:].any()  # padding is zero
        assert not b["timesteps"][i, n:].any()


def test_states_normalised_with_dataset_stats():
    ds = EpisodeDataset([make_episode(10), make_episode(30, obs_offset=5.0)], "two")
    s = SequenceSampler(ds, context_len=4)
    mean, std = ds.state_stats()
    b = s.sample(32)
    valid = b["mask"] > 0
    raw = b["states"][valid] * std + mean  # back to raw observations: pairs (x, x+1)
    np.testing.assert_allclose(raw[:, 1] - raw[:, 0], 1.0, atol=1e-4)


def test_delayed_rtg_is_full_return_everywhere():
    ds = EpisodeDataset([make_episode(6, reward=2.0)], "d")
    b = SequenceSampler(ds, context_len=3, reward_scale=1.0, delayed=True).sample(50)
    np.testing.assert_allclose(b["goals"][..., 0][b["mask"] > 0], 12.0)


def test_length_weighted_choice():
    ds = EpisodeDataset([make_episode(10, obs_offset=0.0), make_episode(90, obs_offset=1000.0)], "w")
    s = SequenceSampler(ds, context_len=1, state_mean=np.zeros(2), state_std=np.ones(2), seed=1)
    b = s.sample(4000)
    frac_long = (b["states"][:, 0, 0] >= 1000).mean()
    assert 0.86 < frac_long < 0.94  # expected 0.9


def test_pct_traj_keeps_best_episodes():
    eps = [make_episode(10, reward=r) for r in (1.0, 5.0, 3.0, 4.0)]  # returns 10, 50, 30, 40
    ds = EpisodeDataset(eps, "p")
    np.testing.assert_array_equal(top_episodes(ds, 0.5), [1, 3])  # 20 of 40 steps: the two best
    np.testing.assert_array_equal(top_episodes(ds, 0.01), [1])  # at least one
    s = SequenceSampler(ds, context_len=2, reward_scale=1.0, pct_traj=0.5)
    assert s.num_steps == 20
    b = s.sample(200)
    per_step_reward = b["goals"][:, 0, 0] / (10 - b["timesteps"][:, 0])  # rtg = r * steps left
    assert set(np.round(per_step_reward, 4)) == {4.0, 5.0}
    with pytest.raises(DtdError):
        top_episodes(ds, 0.0)


def test_rng_state_replays_batches():
    ds = EpisodeDataset([make_episode(20), make_episode(7)], "r")
    s = SequenceSampler(ds, context_len=4, seed=3)
    state = s.get_state()
    a = s.sample(8)
    s.set_state(state)
    b = s.sample(8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_goal_episode_and_extra_keys():
    eps = [make_episode(5), make_episode(8)]
    for i, ep in enumerate(eps):
        ep.goals = np.full((len(ep), 2), i + 1.0, np.float32)
    s = SequenceSampler(EpisodeDataset(eps, "g"), context_len=3, goal="episode")
    s.add_key("waypoints", [ep.observations + 100 for ep in s.episodes])
    b = s.sample(16)
    assert b["goals"].shape == (16, 3, 2) and b["waypoints"].shape == (16, 3, 2)
    valid = b["mask"] > 0
    assert set(np.unique(b["goals"][valid])) <= {1.0, 2.0}
    assert (b["waypoints"][valid] >= 100).all() and not b["waypoints"][~valid].any()
    with pytest.raises(DtdError):
        SequenceSampler(EpisodeDataset([make_episode(5)], "n"), goal="episode")
