"""Model contract tests: causality, right padding, training, act == forward, attention, sizes."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from dtd.errors import DtdError
from dtd.models import MODEL_NAMES, DTdConfig, build_model

S, A, K, T = 5, 2, 5, 50  # state dim, action dim, window, max_ep_len: tiny
TINY = {
    "dtd": {"hidden_size": 16, "n_layer": 2, "ff_dim": 32, "join_ff_dim": 32},
    "dt-small": {"hidden_size": 16, "n_layer": 2},
    "dt-large": {"hidden_size": 16, "n_layer": 2, "n_head": 4},
    "bc": {"hidden_size": 16},
}
DTD_VARIANTS = [
    {},
    *({"bias": b} for b in ("b0", "left", "right", "b1", "b2")),
    *({"combiner": c} for c in ("c21", "c23")),
    *({"norm_mode": n} for n in ("n0", "n1", "n2")),
    {"modality_emb": False},
    {"join_all": True},
    {"norm_joint": True},
    {"timestep_tables": "shared"},
    {"join_timestep": False},
    {"waypoint_head": True, "goal_dim": 4},
    {"bias": "b0", "combiner": "c21", "norm_mode": "n2", "modality_emb": False},
    {"bias": "right", "combiner": "c23", "join_all": True, "norm_joint": True, "norm_mode": "n1"},
    {"bias": "left", "norm_mode": "n0", "timestep_tables": "shared", "join_timestep": False, "n_join_layer": 2},
]
CASES = [("dtd", v) for v in DTD_VARIANTS] + [("dt-small", {}), ("dt-large", {}), ("bc", {})]
IDS = ["dtd-" + ("-".join(f"{k}={v}" for k, v in v.items()) or "default") for _, v in CASES[: len(DTD_VARIANTS)]]
IDS += [name for name, _ in CASES[len(DTD_VARIANTS) :]]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and a busy shared box makes them thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name: str, overrides: dict, seed: int = 0):
    torch.manual_seed(seed)
    kw = {**TINY[name], **overrides}
    goal_dim = kw.pop("goal_dim", 1)
    return build_model(name, S, A, goal_dim=goal_dim, max_ep_len=T, context_len=K, **kw).eval()


def batch(model, b: int = 3, k: int = K, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    goal_dim = model.config.goal_dim
    return (
        torch.randn(b, k, S, generator=g),
        torch.rand(b, k, A, generator=g) * 2 - 1,
        torch.randn(b, k, goal_dim, generator=g),
        torch.randint(0, T, (b, k), generator=g),
    )


def goal_lag(name: str, overrides: dict) -> int | None:
    """How many steps later g_t first reaches a prediction; None: never (BC, b0). With bias "right"
    alone the goal enters only the action stream, which the prediction at s_t reads up to a_{t-1}."""
    if name == "bc" or overrides.get("bias") == "b0":
        return None
    return 1 if overrides.get("bias") == "right" and not overrides.get("join_all") else 0


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_causality(name, overrides):
    model = make(name, overrides)
    s, a, g, t = batch(model)
    base = model(s, a, g, t).actions  # (B, K, A)
    for j in range(K):
        s2, a2, g2, t2 = s.clone(), a.clone(), g.clone(), t.clone()
        s2[:, j] += 1.0
        a2[:, j] = -a2[:, j]
        g2[:, j] += 1.0
        t2[:, j] = (t2[:, j] + 7) % T
        out = model(s2, a2, g2, t2).actions
        torch.testing.assert_close(out[:, :j], base[:, :j], atol=1e-6, rtol=0)  # the future never leaks
        assert not torch.allclose(out[:, j], base[:, j])  # but the present matters

        a3 = a.clone()
        a3[:, j] = -a3[:, j] + 0.5
        torch.testing.assert_close(model(s, a3, g, t).actions[:, : j + 1], base[:, : j + 1], atol=1e-6, rtol=0)

        s4 = s.clone()
        s4[:, j] += 1.0
        assert not torch.allclose(model(s4, a, g, t).actions[:, j], base[:, j])  # s_t drives a_t
        lag = goal_lag(name, overrides)
        if lag is not None and j + lag < K:
            g5 = g.clone()
            g5[:, j] += 1.0
            assert not torch.allclose(model(s, a, g5, t).actions[:, j + lag], base[:, j + lag])  # so does g_t
        if name != "bc" and j > 0:  # and the previous action (history)
            a6 = a.clone()
            a6[:, j - 1] = -a6[:, j - 1] + 0.5
            assert not torch.allclose(model(s, a6, g, t).actions[:, j], base[:, j])


def padded(model, lengths: list[int], seed: int = 2):
    """Right-padded windows with garbage after each valid prefix, their mask, and the clean inputs."""
    s, a, g, t = batch(model, b=len(lengths), seed=seed)
    mask = torch.zeros(len(lengths), K)
    garbage = batch(model, b=len(lengths), seed=seed + 100)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        for x, junk in zip((s, a, g, t), garbage):
            x[i, n:] = junk[i, n:] * 5 if x.is_floating_point() else junk[i, n:]
    return (s, a, g, t), mask


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_padding_matches_shorter_window(name, overrides):
    model = make(name, overrides)
    lengths = [K, 3, 1]
    inputs, mask = padded(model, lengths)
    for attention in (False, True):
        out = model(*inputs, mask=mask, return_attention=attention).actions
        for i, n in enumerate(lengths):
            alone = model(*(x[i : i + 1, :n] for x in inputs), mask=mask[i : i + 1, :n]).actions[0]
            torch.testing.assert_close(out[i, :n], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_act_equals_forward(name, overrides):
    model = make(name, overrides)
    lengths = torch.tensor([2, K, 1, 4])
    inputs, mask = padded(model, lengths.tolist(), seed=3)
    acts = model.act(*inputs, lengths=lengths)  # (N, A)
    assert acts.shape == (4, A)
    full = model(*inputs, mask=mask).actions
    for i, n in enumerate(lengths.tolist()):
        alone = model(*(x[i : i + 1, :n] for x in inputs)).actions[0, n - 1]
        torch.testing.assert_close(acts[i], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(acts[i], full[i, n - 1], atol=1e-5, rtol=0)


FULL_SIZE = [  # the real widths too: BLAS picks its kernels by shape
    ("dtd", {"hidden_size": 128, "n_layer": 3, "ff_dim": 256, "join_ff_dim": 512}),
    ("dt-small", {"hidden_size": 128, "n_layer": 3}),
]
SIZE_CASES, SIZE_IDS = CASES + FULL_SIZE, IDS + ["dtd-full", "dt-small-full"]
TWO_THREADS = {"dtd-full", "dt-small-full", "dt-small", "dt-large", "bc", IDS[len(DTD_VARIANTS) - 1]}
INVARIANCE = [  # every variant with 1 thread; with 2 (slow on a busy box) the real sizes and one of each kind
    pytest.param(name, overrides, threads, id=f"{case_id}-{threads}threads")
    for (name, overrides), case_id in zip(SIZE_CASES, SIZE_IDS)
    for threads in (1, 2)
    if threads == 1 or case_id in TWO_THREADS
]


@pytest.mark.parametrize("name,overrides,threads", INVARIANCE)
def test_act_is_batch_invariant(name, overrides, threads):
    """Batched evaluation must return exactly what one episode at a time does: a window's action
    may not depend, even in the last bit, on how many windows share the call (N shrinks as episodes end)."""
    model = make(name, overrides)
    k = 20  # evaluation's window; with 2 threads the full-window layers (M = N x K rows) need K >= 12 here
    lengths = torch.tensor([k, 1, 3, 2, k, 4, 1, 5, 2, 3, k, 1])  # N = 12 windows
    inputs = batch(model, b=len(lengths), k=k, seed=4)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        acts = model.act(*inputs, lengths=lengths)  # (N, A)
        for i in range(len(lengths)):
            alone = model.act(*(x[i : i + 1] for x in inputs), lengths=lengths[i : i + 1])
            assert torch.equal(alone[0], acts[i]), f"window {i} alone"
        for n in (2, 3, 5, 10):
            assert torch.equal(model.act(*(x[:n] for x in inputs), lengths=lengths[:n]), acts[:n]), f"first {n}"
        # as batched evaluation passes them: strided views of longer history buffers (rows 3 .. 3 + K)
        views = []
        for x in inputs:
            buf = x.new_zeros(x.shape[0], k + 7, *x.shape[2:])
            buf[:, 3 : 3 + k] = x
            views.append(buf[:, 3 : 3 + k])
        assert not views[0].is_contiguous() and torch.equal(model.act(*views, lengths=lengths), acts), "views"
    finally:
        torch.set_num_threads(before)


def expected_maps(name: str, model) -> dict[str, tuple[int, int]]:
    """Attention map name -> (heads, length) per the design contract."""
    cfg = model.config
    if name == "bc":
        return {}
    if name.startswith("dt-"):
        return {f"layer{i}": (cfg.n_head, 3 * K) for i in range(cfg.n_layer)}
    maps = {f"encoder.{m}.{i}": (cfg.n_head, K) for m in cfg.streams for i in range(cfg.n_layer)}
    maps |= {f"bias.{m}": (1, K) for m in cfg.biased}
    n = 3 if cfg.join_all else 2
    return maps | {f"join.{i}": (cfg.join_n_head, n * K) for i in range(cfg.n_join_layer)}


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_attention_weights(name, overrides):
    model = make(name, overrides)
    lengths = [K, 2]
    inputs, mask = padded(model, lengths, seed=4)
    fast = model(*inputs, mask=mask)
    slow = model(*inputs, mask=mask, return_attention=True)
    assert fast.attention is None
    for i, n in enumerate(lengths):
        torch.testing.assert_close(slow.actions[i, :n], fast.actions[i, :n], atol=1e-5, rtol=0)
    maps = expected_maps(name, model)
    assert set(slow.attention) == set(maps)
    for key, w in slow.attention.items():
        heads, length = maps[key]
        assert w.shape == (2, heads, length, length), key
        assert torch.all(w.triu(diagonal=1) == 0), f"{key} attends the future"
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5, rtol=0)
        per_step = length // K  # tokens per timestep in this map
        valid = torch.arange(length) < lengths[1] * per_step
        assert torch.all(w[1][:, valid][:, :, ~valid] == 0), f"{key}: a valid query attends padding"


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_trains_on_fixed_batch(name, overrides):
    model = make(name, overrides)
    inputs, mask = padded(model, [K, 4, 2, 1], seed=5)
    target = torch.rand(4, K, A, generator=torch.Generator().manual_seed(6)) * 1.6 - 0.8

    def loss_fn():
        out = model(*inputs, mask=mask)
        loss = (((out.actions - target) ** 2).mean(-1) * mask).sum() / mask.sum()
        if out.waypoints is not None:
            loss = loss + ((out.waypoints - target[..., :2]) ** 2).mean()
        return loss

    with torch.no_grad():
        before = loss_fn().item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    # every parameter tensor takes part in the graph (DDP without find_unused_parameters)
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        after = loss_fn().item()
    assert after < 0.7 * before, (before, after)


def test_parameter_counts_hopper():
    dtd = build_model("dtd", 11, 3)
    assert dtd.num_params() == 1_852_419  # the authors' working model (spec, corrected count)
    legacy = build_model("dtd", 11, 3, timestep_tables="per_stream", join_timestep=True).num_params()
    assert legacy - dtd.num_params() == 5 * 1000 * 128  # dtd 0.1: 2 more input tables + 3 join tables
    large = build_model("dt-large", 11, 3)
    assert large.num_params() == 1_876_563 and abs(large.num_params() - 1_852_419) <= 0.05 * 1_852_419
    small = build_model("dt-small", 11, 3)
    assert (small.config.n_layer, small.config.n_head, small.config.hidden_size) == (3, 1, 128)
    assert small.num_params() == 726_019
    # "more heads, layers and a higher dimension" than dt-small
    assert large.config.n_layer > 3 and large.config.n_head > 1 and large.config.hidden_size > 128
    assert build_model("bc", 11, 3).num_params() == 135_427


def test_readme_model_table_gives_the_parameters_each_model_builds():
    """The README's Models table is where users read the sizes; it once kept a count the default had left."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z-]+)` \|.*\| ([\d,]+) \|$", readme, flags=re.M))
    assert set(rows) == set(MODEL_NAMES)
    for name, count in rows.items():
        assert build_model(name, 11, 3).num_params() == int(count.replace(",", "")), name


def test_default_dtd_trains_every_parameter():
    """After one backward pass every parameter of the default DTd has a non-zero gradient: no layer is
    built and left unused (the authors' class has 663,296 such parameters; we must have none)."""
    torch.manual_seed(0)
    model = build_model("dtd", 11, 3)
    b, k = 8, 20
    states, goals = torch.randn(b, k, 11), torch.randn(b, k, 1)
    actions = torch.rand(b, k, 3) * 2 - 1
    timesteps = torch.randint(0, 1000, (b, 1)) + torch.arange(k)
    out = model(states, actions, goals, timesteps, mask=torch.ones(b, k))
    ((out.actions - actions) ** 2).mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    assert sum(p.numel() for p in model.parameters() if p.grad is not None) == 1_852_419


def test_default_dtd_is_the_authors_model():
    """One shared input timestep table, none at the join; no embedding dropout; no dropout on the goal
    cross-attention; Xavier as on a packed q/k/v, PyTorch's default biases."""
    model = build_model("dtd", 11, 3)
    assert model.time_in.num_embeddings == 1000 and model.time_join is None
    assert model.drop.p == 0.0
    assert all(bc.attn.dropout == 0.0 for bc in model.bias_combine.values())
    assert all(layer.attn.dropout == 0.1 for enc in model.encoders.values() for layer in enc)
    attn = model.encoders["state"][0].attn
    h = 128
    for lin in (attn.q, attn.k, attn.v):  # std of Xavier-normal on a 3H x H matrix: sqrt(2 / 4H) = 0.0625
        assert abs(lin.weight.std().item() - (2 / (4 * h)) ** 0.5) < 0.004
        assert torch.all(lin.bias == 0)
    assert abs(attn.proj.weight.std().item() - (2 / (2 * h)) ** 0.5) < 0.006 and torch.all(attn.proj.bias == 0)
    ff = model.encoders["state"][0].ff[0]  # a Linear keeps PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in)) bias
    assert ff.bias.abs().max() <= h ** -0.5 and ff.bias.abs().max() > 0.5 * h ** -0.5
    legacy = build_model("dtd", 11, 3, init="separate_qkv")
    q = legacy.encoders["state"][0].attn.q
    assert abs(q.weight.std().item() - (2 / (2 * h)) ** 0.5) < 0.006 and torch.all(q.bias == 0)
    torch.manual_seed(0)
    base = build_model("dtd", 11, 3)
    torch.manual_seed(0)
    scaled = build_model("dtd", 11, 3, head_init_scale=0.1)
    assert torch.allclose(scaled.head.weight, 0.1 * base.head.weight)
    assert torch.allclose(scaled.head.bias, 0.1 * base.head.bias)


def test_rebuild_fills_fields_an_old_checkpoint_lacks():
    """A dtd 0.1 checkpoint stored no embed_dropout / cross_attn_dropout / init: it rebuilds as it trained."""
    from dtd.models import rebuild_model

    stored = asdict(build_model("dtd", 11, 3, timestep_tables="per_stream", join_timestep=True).config)
    for key in ("embed_dropout", "cross_attn_dropout", "init", "head_init_scale"):
        del stored[key]
    old = rebuild_model("dtd", stored)
    assert old.num_params() == 2_492_419 and old.drop.p == 0.1 and old.config.init == "separate_qkv"
    assert all(bc.attn.dropout == 0.1 for bc in old.bias_combine.values())
    new = rebuild_model("dtd", asdict(build_model("dtd", 11, 3).config))
    assert new.num_params() == 1_852_419 and new.drop.p == 0.0
    with pytest.raises(DtdError, match="unknown model"):
        rebuild_model("gpt", stored)


def test_build_model_options_and_rebuild():
    assert build_model("dtd", S, A, bias="b1", **TINY["dtd"]).config.bias == "left"
    assert build_model("dtd", S, A, bias="b2", **TINY["dtd"]).config.bias == "all"
    m = build_model("dtd", S, A, n_layer="1", join_all="true", dropout="0.2", hidden_size=16)
    assert (m.config.n_layer, m.config.join_all, m.config.dropout) == (1, True, 0.2)
    for bad in ({"combiner": "c24"}, {"norm_mode": "n4"}, {"bias": "b3"}, {"no_such": 1}, {"n_layer": "two"},
                {"bias": "b0", "join_all": True}, {"hidden_size": 10, "n_head": 3}):
        with pytest.raises(DtdError):
            build_model("dtd", S, A, **bad)
    with pytest.raises(DtdError):
        build_model("gpt", S, A)
    for name in TINY:  # a checkpoint stores asdict(config); that rebuilds the same model
        model = make(name, {})
        again = build_model(name, **asdict(model.config))
        again.load_state_dict(model.state_dict())
        assert asdict(again.config) == asdict(model.config)
    assert isinstance(make("dtd", {}).config, DTdConfig)


def test_dropout_mask_rate_and_scale():
    """keep_mask: iid drops at rate p (every 16-bit lane of the int64 draws, not just the low ones),
    kept values scaled so the layer is unbiased, gradients through the same mask."""
    from dtd.models.transformer import Dropout, keep_mask

    torch.manual_seed(0)
    for p in (0.1, 0.5):
        m = keep_mask(torch.ones(400_000), p)
        dropped = (m == 0).float()
        values = m.unique().tolist()
        assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / (1 - p), rel=1e-4)
        for lane in dropped.view(-1, 4).mean(0):  # 100,000 draws a lane: std of the rate ~0.0016
            assert abs(lane.item() - p) < 0.01
        assert abs(m.mean().item() - 1.0) < 0.01
    x = torch.randn(6, 7, requires_grad=True)
    y = Dropout(0.3).train()(x)
    y.sum().backward()
    kept = y.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.7)) and (x.grad[~kept] == 0).all()
    assert torch.equal(Dropout(0.3).eval()(x), x) and torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_training_fast_path_equals_full_layers(name, overrides):
    """Training's forward (last layer only at the state tokens, fused or spelled-out attention) gives the
    full-layer path's outputs and gradients: the same math with fewer products (dropout off)."""
    model = make(name, {**overrides, "dropout": 0.0}).train()
    inputs, mask = padded(model, [K, K, 3], seed=7)
    results = []
    for explicit in (False, True):
        model.zero_grad()
        out = model(*inputs, mask=mask, return_attention=explicit)
        loss = (out.actions.square().sum(-1) * mask).sum()
        if out.waypoints is not None:
            loss = loss + (out.waypoints.square().sum(-1) * mask).sum()  # padded positions are never read
        loss.backward()
        results.append((out.actions.detach() * mask[..., None], [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_attention_dropout_same_masks_fast_and_spelled_out():
    """With dropout on (CPU training), the fast attention draws the same masks as the explicit-weights
    path: seed for seed the same output on full windows."""
    from dtd.models.transformer import CausalAttention

    torch.manual_seed(0)
    attn = CausalAttention(16, 2, dropout=0.3).train()
    x = torch.randn(3, 7, 16)
    outs = []
    for explicit in (False, True):
        torch.manual_seed(1)
        outs.append(attn(x, return_attention=explicit)[0])
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=0)


def test_fixed_shape_act_pads_and_chunks():
    """On a GPU `act` runs every call at one shape (fixed_shape_act): each call gets exactly `size` windows, the
    padding repeats the first window, and the result is the plain call's, bit for bit (checked here on the CPU,
    where act is batch-invariant already)."""
    from dtd.models.transformer import fixed_shape_act

    model = make("dtd", {})
    lengths = torch.tensor([K, 1, 3, 2, K, 4, 1, 5, 2, 3, K, 1])
    inputs = batch(model, b=len(lengths), k=K, seed=4)
    seen = []

    def recording(*windows):
        seen.append(windows)
        return model._act(*windows)

    for n in (1, 4, 5, 6, 12):
        seen.clear()
        got = fixed_shape_act(recording, 5, *(x[:n] for x in inputs), lengths[:n])
        assert torch.equal(got, model.act(*(x[:n] for x in inputs), lengths=lengths[:n])), n
        assert len(seen) == -(-n // 5) and all(w[0].shape[0] == 5 for w in seen)
        last = seen[-1]
        for j in range(n - 5 * (len(seen) - 1), 5):  # the padding: copies of window 0
            assert torch.equal(last[0][j], inputs[0][0]) and last[-1][j] == lengths[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name,overrides", FULL_SIZE, ids=["dtd-full", "dt-small-full"])
def test_act_is_batch_invariant_on_cuda(name, overrides):
    """The same contract on a GPU, where it rests on fixed_shape_act (cuBLAS picks kernels by the whole shape)."""
    model = make(name, overrides).cuda()
    lengths = torch.tensor([20, 1, 3, 2, 20, 4, 1, 5, 2, 3, 20, 1])
    inputs = [x.cuda() for x in batch(model, b=len(lengths), k=20, seed=4)]
    acts = model.act(*inputs, lengths=lengths)
    for i in range(len(lengths)):
        assert torch.equal(model.act(*(x[i : i + 1] for x in inputs), lengths=lengths[i : i + 1])[0], acts[i])
