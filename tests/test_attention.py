"""The paper's 9-score attention quantification on hand-made maps (no model needed)."""

import numpy as np
import pytest

from dtd.analysis.attention import (
    SCORE_NAMES, modality_scores, row_entropy, score_windows, summarize, symmetric_scores,
)
from dtd.errors import DtdError


def test_scores_count_each_pair_and_mask_same_step_forward_entries():
    # 2 steps, tokens g0 s0 a0 g1 s1 a1; every entry 1 so each score counts entries
    attn = np.ones((6, 6))
    s = dict(zip(SCORE_NAMES, modality_scores(attn, 2).reshape(9)))
    # backward/same-modality pairs keep all 2 x 2 entries
    assert s["rr"] == s["ss"] == s["aa"] == s["sr"] == s["ar"] == s["as"] == 4
    # goal->state, goal->action, state->action lose the 2 same-timestep entries
    assert s["rs"] == s["ra"] == s["sa"] == 2


def test_scores_use_the_right_token_indices():
    attn = np.zeros((9, 9))
    attn[3 * 2 + 1, 3 * 0 + 2] = 0.7  # s_2 -> a_0
    attn[3 * 1 + 0, 3 * 1 + 1] = 0.5  # g_1 -> s_1 (same step, masked)
    attn[3 * 1 + 0, 3 * 2 + 1] = 0.25  # g_1 -> s_2 (later step, kept)
    attn[3 * 2 + 2, 3 * 2 + 0] = 0.125  # a_2 -> g_2 (same step, backward, kept)
    s = dict(zip(SCORE_NAMES, modality_scores(attn, 3).reshape(9)))
    assert s["sa"] == pytest.approx(0.7)
    assert s["rs"] == pytest.approx(0.25)
    assert s["ar"] == pytest.approx(0.125)
    assert sum(s.values()) == pytest.approx(0.7 + 0.25 + 0.125)


def _causal_softmax(n_tok: int, pad_to: int, rng) -> np.ndarray:
    logits = rng.normal(size=(pad_to, pad_to))
    allowed = np.tril(np.ones((pad_to, pad_to), bool))
    allowed[:, n_tok:] = False  # padded keys
    allowed[n_tok:, 0] = True  # padded queries: anything, must be ignored
    p = np.where(allowed, np.exp(logits), 0.0)
    return p / p.sum(-1, keepdims=True)


def test_window_scores_sum_to_attention_mass():
    rng = np.random.default_rng(0)
    # a random non-causal map: 9 scores = valid block mass minus the zeroed same-step forward entries
    attn = rng.random((12, 12))
    n = 3
    block = attn[:9, :9]
    zeroed = sum(block[3 * t + i, 3 * t + j] for t in range(n) for i in range(3) for j in range(3) if j > i)
    assert modality_scores(attn, n).sum() == pytest.approx(block.sum() - zeroed)
    # a causal softmax over a right-padded window: exactly one unit per valid query token
    attn = _causal_softmax(9, 12, rng)
    assert modality_scores(attn, 3).sum() == pytest.approx(9.0)


def test_join_network_layout_and_symmetric_scores():
    # DTd join: tokens (s_t, a_t); goal rows/columns stay zero
    attn = np.ones((4, 4))
    m = modality_scores(attn, 2, modalities=(1, 2))
    assert m[0].sum() == 0 and m[:, 0].sum() == 0
    assert m[1, 1] == 4 and m[1, 2] == 2 and m[2, 1] == 4 and m[2, 2] == 4
    sym = symmetric_scores(m.reshape(9))
    assert list(sym) == [0, 4, 4, 0, 0, 6]


def test_score_windows_reads_dt_and_dtd_maps():
    rng = np.random.default_rng(1)
    k, b = 4, 2
    lengths = np.array([4, 2])
    dt = {f"layer{i}": np.stack([np.stack([_causal_softmax(3 * n, 3 * k, rng)] * 2) for n in lengths])
          for i in range(3)}  # (B, heads, 3K, 3K)
    ws = score_windows(dt, lengths, "mean")
    assert ws.scores.shape == (b, 9)
    np.testing.assert_allclose(ws.scores.sum(-1), 3 * lengths)
    dtd = {"join.0": np.stack([np.stack([_causal_softmax(2 * n, 2 * k, rng)] * 2) for n in lengths]),
           "bias.state": np.stack([_causal_softmax(n, k, rng)[None] for n in lengths]),
           "encoder.state.0": np.zeros((b, 1, k, k))}
    ws = score_windows(dtd, lengths, "last")
    np.testing.assert_allclose(ws.scores.sum(-1), 2 * lengths)
    assert ws.scores[:, :3].sum() == 0 and ws.scores[:, [3, 6]].sum() == 0  # no goal tokens in the join
    assert ws.bias_entropy["state"].shape == (b, 2)
    summary = summarize(ws, "dtd")
    assert sum(summary["share"].values()) == pytest.approx(1.0)
    assert "state" in summary["bias_entropy"]


def test_row_entropy_uniform_and_one_hot():
    k = 5
    uniform = np.tril(np.ones((k, k))) / np.arange(1, k + 1)[:, None]
    h, norm = row_entropy(uniform, k)
    assert norm == pytest.approx(1.0)
    assert h == pytest.approx(np.mean(np.log(np.arange(1, k + 1))))
    assert row_entropy(np.eye(k), k) == pytest.approx((0.0, 0.0))


def test_bad_layer_and_small_map():
    with pytest.raises(DtdError, match="--layer"):
        score_windows({"layer0": np.ones((1, 1, 6, 6))}, np.array([2]), "first")
    with pytest.raises(DtdError, match="smaller"):
        modality_scores(np.ones((3, 3)), 2)
