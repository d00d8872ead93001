"""`dtd export`: TorchScript and ONNX files give the PyTorch model's actions on real Hopper-v5 windows."""

import numpy as np
import pytest

from dtd.cli import main
from dtd.errors import DtdError

K = 4
TARGET = 3600.0


def hopper_windows(run_dir, steps=9):
    """Drive Hopper-v5 with dtd.Policy; return the raw K-windows of every step and the policy's actions."""
    from dtd.envs import make_env
    from dtd.policy import Policy

    policy = Policy.load(run_dir, target=TARGET)
    env = make_env("Hopper-v5")
    obs, _ = env.reset(seed=3)
    hist_o, hist_a, hist_r, windows, acts = [], [], [], [], []
    reward = 0.0
    for t in range(steps):
        a = policy.act(obs, reward)
        hist_o.append(obs.astype(np.float32))
        hist_a.append(a.astype(np.float32))
        lo, n = max(0, t - K + 1), min(t + 1, K)
        rtg = TARGET - np.concatenate([[0.0], np.cumsum(hist_r)])  # (t+1,) return-to-go in reward units
        w = {"observations": np.zeros((K, 11), np.float32), "actions": np.zeros((K, 3), np.float32),
             "goals": np.zeros((K, 1), np.float32), "timesteps": np.zeros(K, np.int64), "mask": np.zeros(K, np.float32)}
        w["observations"][:n], w["actions"][:n] = hist_o[lo:], hist_a[lo:]
        w["actions"][n - 1] = 0.0  # the slot of the action being chosen
        w["goals"][:n, 0], w["timesteps"][:n], w["mask"][:n] = rtg[lo:], np.arange(lo, t + 1), 1.0
        windows.append(w)
        acts.append(a)
        obs, reward, term, trunc, _ = env.step(np.clip(a, -1, 1))
        hist_r.append(reward)
        assert not (term or trunc)
    env.close()
    batch = {k: np.stack([w[k] for w in windows]) for k in windows[0]}
    return batch, np.stack(acts)


@pytest.mark.parametrize("model", ["dt", "dtd"])
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_file_matches_pytorch_on_hopper(tiny_runs, tmp_path, model, fmt, capsys):
    import torch

    from dtd.export import INPUT_NAMES, inference_module, load_exported
    from dtd.runs import load_run

    out = tmp_path / f"policy.{'pt' if fmt == 'torchscript' else 'onnx'}"
    assert main(["export", str(tiny_runs[model]), "--format", fmt, "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    batch, policy_actions = hopper_windows(tiny_runs[model])
    inputs = [batch[k] for k in INPUT_NAMES]
    fn, meta = load_exported(out)
    got = fn(*inputs)  # (N, A)
    assert got.shape == (len(policy_actions), 3)
    assert meta["context_len"] == K and meta["obs_dim"] == 11 and meta["format"] == fmt
    # the model's own batched act() on the same windows, normalised outside
    net, info = load_run(tiny_runs[model])
    states = (batch["observations"] - info.state_mean) / info.state_std * batch["mask"][..., None]
    want = net.act(torch.as_tensor(states, dtype=torch.float32), torch.as_tensor(batch["actions"]),
                   torch.as_tensor(batch["goals"] / info.reward_scale), torch.as_tensor(batch["timesteps"]),
                   torch.as_tensor(batch["mask"].sum(1).astype(np.int64))).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got, policy_actions, atol=1e-5)  # and what dtd.Policy did in the env
    # the wrapper in PyTorch agrees too (the file is a faithful trace of it)
    ref = inference_module(net, info.state_mean, info.state_std, meta["goal_scale"])
    np.testing.assert_allclose(ref(*[torch.as_tensor(x) for x in inputs]).detach().numpy(), want, atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_file_rejects_wrong_shapes(tiny_runs, tmp_path, fmt):
    from dtd.export import export_run, load_exported

    path = export_run(tiny_runs["dt"], fmt, tmp_path / f"p.{'pt' if fmt == 'torchscript' else 'onnx'}")
    fn, _ = load_exported(path)
    bad = [np.zeros((1, K, 7), np.float32), np.zeros((1, K, 3), np.float32), np.zeros((1, K, 1), np.float32),
           np.zeros((1, K), np.int64), np.ones((1, K), np.float32)]
    with pytest.raises(Exception):
        fn(*bad)
    # a correct call (another batch size) still works after the error
    out = fn(np.zeros((2, K, 11), np.float32), np.zeros((2, K, 3), np.float32), np.zeros((2, K, 1), np.float32),
             np.zeros((2, K), np.int64), np.ones((2, K), np.float32))
    assert out.shape == (2, 3) and np.isfinite(out).all()


def test_export_errors(tiny_runs, tmp_path, capsys):
    from dtd.export import export_run, load_exported

    with pytest.raises(DtdError, match="format"):
        export_run(tiny_runs["dt"], "tflite", tmp_path / "x")
    with pytest.raises(DtdError, match="no such"):
        load_exported(tmp_path / "missing.onnx")
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
