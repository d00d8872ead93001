"""dtd train end to end on a tiny generated dataset: logs, checkpoints, evaluation on Hopper-v5,
exact resume after a real SIGKILL, and bad input (one error line, non-zero exit)."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dtd.errors import DtdError
from dtd.runs import load_run, read_checkpoint
from dtd.config import TrainConfig
from dtd.training.trainer import train

TINY = ["--hidden_size", "16", "--n_layer", "1", "--context_len", "5", "--max_ep_len", "64", "--batch_size", "8",
        "--model_opts", "ff_dim=16", "join_ff_dim=16"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A DT-style pickle named like a Hopper dataset (obs 11, act 3) so the loader maps it to Hopper-v5."""
    rng = np.random.default_rng(0)
    trajs = []
    for n in (30, 50, 40, 60):
        obs = rng.normal(size=(n, 11)).astype(np.float32)
        trajs.append({"observations": obs, "actions": np.tanh(obs[:, :3]).astype(np.float32),
                      "rewards": rng.random(n).astype(np.float32), "terminals": np.eye(n, dtype=bool)[-1]})
    path = tmp_path_factory.mktemp("data") / "hopper-tiny.pkl"
    path.write_bytes(pickle.dumps(trajs))
    return str(path)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "dtd", "train", "--no-progress", *args],
                          capture_output=True, text=True, cwd=cwd)


def test_train_end_to_end(tiny_dataset, tmp_path):
    cfg = TrainConfig(dataset=tiny_dataset, context_len=5, max_ep_len=64,
                      model_options=dict(hidden_size=16, n_layer=1, ff_dim=16, join_ff_dim=16), batch_size=8, lr=3e-3, warmup_steps=5,
                      steps=40, log_every=10, ckpt_every=20, eval_episodes=2, eval_max_steps=15,
                      eval_workers=2, out_dir=str(tmp_path), run_name="run")
    result = train(cfg, progress=False)  # evaluation forks 2 workers from the training process (on CPU)
    run = tmp_path / "run"
    assert result.run_dir == run and result.step == 40
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt", "step_0000020.pt", "step_0000040.pt"]
    lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [ln for ln in lines if "loss" in ln]
    assert [ln["step"] for ln in train_lines] == [10, 20, 30, 40]
    assert train_lines[-1]["loss"] < train_lines[0]["loss"]  # it learns the tanh(obs) actions
    assert train_lines[0]["lr"] == pytest.approx(3e-3 * (0.5 + 0.5 * 0.9997**4)) and train_lines[0]["samples_per_s"] > 0
    evals = [ln for ln in lines if "eval" in ln]
    assert [ln["step"] for ln in evals] == [0, 40] and set(evals[0]["eval"]) == {"3600", "1800"}
    assert "normalized_mean" in evals[-1]["eval"]["3600"]
    summary = json.loads((run / "eval.json").read_text())
    assert summary["step"] == 40 and summary["env_id"] == "Hopper-v5" and "untrained" in summary
    assert summary["workers"] == (1 if torch.cuda.is_available() else 2)
    assert any(p.name.startswith("events") for p in (run / "tb").iterdir())

    model, info = load_run(run)
    assert not model.training and info.step == 40 and info.config.env_id == info.env_id == "Hopper-v5"
    assert info.state_mean.shape == (11,) and info.reward_scale == 1000.0 and info.goal == "rtg"
    for k, v in model.state_dict().items():
        assert torch.equal(v, result.model.state_dict()[k])


def test_resume_after_kill_matches_uninterrupted(tiny_dataset, tmp_path):
    common = ["--dataset", tiny_dataset, *TINY, "--steps", "400", "--ckpt_every", "25", "--log_every", "25",
              "--eval_episodes", "0", "--dropout", "0.1", "--max_minutes", "0", "--out_dir", str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "dtd", "train", "--no-progress", *common, "--run_name", "killed"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "checkpoints" / "step_0000025.pt"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=False)["step"]
    assert 25 <= killed_at < 400, "the run must be killed part-way"

    r = subprocess.run([sys.executable, "-m", "dtd", "train", "--no-progress", "--resume", str(tmp_path / "killed")],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "dtd", "train", "--no-progress", *common, "--run_name", "straight"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    a = read_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    b = read_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert a.info.step == b.info.step == 400
    for k in b.weights:
        assert torch.equal(a.weights[k], b.weights[k]), k
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(25, 401, 25))  # lines past the checkpoint were dropped, none repeated


def test_bad_input_one_error_line(tiny_dataset, tmp_path):
    args = ["--dataset", tiny_dataset, *TINY, "--steps", "2", "--eval_episodes", "0", "--out_dir", str(tmp_path)]
    assert _cli(*args, "--run_name", "r", cwd=tmp_path).returncode == 0

    def fails(*argv, match):
        r = _cli(*argv, cwd=tmp_path)
        assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and match in r.stderr, r.stderr

    fails(*args, "--run_name", "r", match="run folder exists")  # never overwritten without --force
    assert _cli(*args, "--run_name", "r", "--force", cwd=tmp_path).returncode == 0
    fails("--resume", str(tmp_path), match="not a dtd run folder")
    fails("--resume", str(tmp_path / "nowhere"), match="no such run folder")
    fails("--resume", str(tmp_path / "r"), match="already trained for 2 of 2 steps")
    fails("--resume", str(tmp_path / "r"), "--lr", "1", match="may be changed, not lr")
    (tmp_path / "r" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    fails("--resume", str(tmp_path / "r"), match="corrupt or unreadable checkpoint")
    with pytest.raises(DtdError, match="corrupt"):
        load_run(tmp_path / "r")
    fails("--dataset", str(tmp_path / "missing.pkl"), match="no such file")


def test_fused_adamw_matches_per_tensor_adamw():
    """make_optimizer (torch's fused AdamW on CPU) takes the same steps as the textbook loop."""
    from dtd.training.schedule import make_optimizer

    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    b = pickle.loads(pickle.dumps(a))
    opt_a = make_optimizer(a.parameters(), 1e-2, 1e-4)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=1e-4, foreach=False)
    assert opt_a.param_groups[0]["fused"]
    for _ in range(5):
        x = torch.randn(32, 7)
        for net, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_compile_wraps_the_training_forward(tiny_dataset, tmp_path, monkeypatch):
    """--compile cudagraphs hands the training forward to torch.compile in "reduce-overhead" mode; evaluation and the
    checkpoint keep the plain model. Dynamo traces for real here, with its eager backend (no Inductor build on a CPU,
    no CUDA graphs), so the steps must match the uncompiled run's."""
    real_compile, modes = torch.compile, []

    def recording_compile(model, mode=None, **_):
        modes.append(mode)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", recording_compile)
    base = dict(dataset=tiny_dataset, context_len=5, max_ep_len=64, batch_size=8, steps=6, warmup_steps=2,
                model_options=dict(hidden_size=16, n_layer=1, ff_dim=16, join_ff_dim=16), eval_episodes=0,
                log_every=3, out_dir=str(tmp_path))  # fmt: skip
    plain = train(TrainConfig(**base, run_name="plain"), progress=False)
    assert modes == []
    compiled = train(TrainConfig(**base, compile="cudagraphs", run_name="compiled"), progress=False)
    assert modes == ["reduce-overhead"] and compiled.step == 6
    ckpt = read_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt")
    assert not any("_orig_mod" in k for k in ckpt.weights)
    for k, v in plain.model.state_dict().items():
        assert torch.allclose(v, ckpt.weights[k], atol=1e-6), k
    model, info = load_run(tmp_path / "compiled")
    assert info.config.compile == "cudagraphs"
    with pytest.raises(DtdError, match="--compile must be one of off, default, cudagraphs"):
        TrainConfig(compile="fast").check_ranges()
