"""Issue #32 beyond the bad-input table: a full disk (RLIMIT_FSIZE in a child process), training that
diverges, resume over damaged metrics, evaluating a step file, the Policy API's misuses, the attention
outputs written as one, and evaluation episodes clamped to their environment's limit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dtd.cli import main
from dtd.errors import DtdError

TINY = ["train", "--no-progress", "--hidden_size", "16", "--n_layer", "1", "--n_head", "2", "--model", "dt-small",
        "--context_len", "4", "--batch_size", "8", "--steps", "2", "--eval_episodes", "0", "--eval_untrained", "false",
        "--log_every", "1", "--ckpt_every", "0", "--threads", "1"]

# the child: a file size limit makes every write past it fail with EFBIG, as a full disk fails with ENOSPC;
# SIGXFSZ is ignored so that the write raises instead of killing the process
FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from dtd.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_full(cwd: Path, limit: int, argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", FULL_DISK, str(limit), *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def one_error(r: subprocess.CompletedProcess) -> str:
    """The command failed cleanly: exit 2, one `dtd: error:` line, no traceback, no HDF5 error stack."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("dtd: error:")]
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert len(errors) == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr + r.stdout and "HDF5-DIAG" not in r.stderr, r.stderr[-3000:]
    return errors[0]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name or p.name.startswith((".dtd-collect", ".dtd-probe"))]


def test_full_disk_train_is_one_line_and_leaves_nothing(tmp_path):
    r = run_full(tmp_path, 20_000, TINY + ["--out_dir", "runs", "--run_name", "full"])
    line = one_error(r)
    assert "runs/full/checkpoints/last.pt: could not write it (File too large)" in line, line
    assert not (tmp_path / "runs" / "full").exists()  # a run without a checkpoint is removed
    assert temp_files(tmp_path) == []


def test_full_disk_iql_is_one_line_and_leaves_nothing(tmp_path):
    r = run_full(tmp_path, 8_000, ["iql", "train", "embedded:hopper", "--steps", "2", "--batch-size", "8", "--hidden",
                                   "8", "--n-layers", "2", "--log-every", "1", "--ckpt-every", "0", "--out-dir", "iql",
                                   "--run-name", "c"])
    assert "iql/c/checkpoints/last.pt: could not write it (File too large)" in one_error(r)
    assert sorted(tmp_path.iterdir()) == []  # IQL keeps no unfinished run


def test_full_disk_resume_keeps_the_run(tmp_path):
    assert main(TINY + ["--out_dir", str(tmp_path / "runs"), "--run_name", "r"]) == 0
    run = tmp_path / "runs" / "r"
    last, metrics = (run / "checkpoints" / "last.pt").read_bytes(), (run / "metrics.jsonl").read_text()
    line = one_error(run_full(tmp_path, 20_000, ["train", "--resume", "runs/r", "--steps", "4", "--no-progress"]))
    assert "runs/r/checkpoints/last.pt: could not write it" in line, line
    assert (run / "checkpoints" / "last.pt").read_bytes() == last  # the previous checkpoint is intact
    assert (run / "metrics.jsonl").read_text().startswith(metrics)
    assert temp_files(tmp_path) == [] and not (run / ".lock").exists()


@pytest.mark.parametrize("argv", [["collect", "--env", "Hopper-v5", "--policy", "random", "--steps", "2000"],
                                  ["collect-maze", "--maze", "umaze", "--steps", "3000"]], ids=["collect", "maze"])
def test_full_disk_collect_is_one_line_and_leaves_nothing(tmp_path, argv):
    """h5py on a full disk printed ~1,000 error stacks and segfaulted; both collectors share the writer."""
    line = one_error(run_full(tmp_path, 100_000, ["data", *argv, "--out", "ds"]))
    assert "ds: could not write the dataset (File too large)" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no dataset, no temporary Minari root


def test_training_that_diverges_stops_keeping_the_last_finite_checkpoint(tmp_path, capsys):
    argv = TINY + ["--out_dir", str(tmp_path), "--run_name", "nan", "--steps", "50", "--ckpt_every", "1",
                   "--lr", "1e30", "--grad_clip", "0", "--warmup_steps", "0"]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dtd: error:")]
    assert len(errors) == 1 and "training stopped" in errors[0] and "last finite checkpoint, step" in errors[0], errors
    step = int(errors[0].split("last finite checkpoint, step ")[1].split()[0])
    ckpt = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["step"] == step and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert sorted(p.name for p in (tmp_path / "nan" / "checkpoints").iterdir())[-1] == f"step_{step:07d}.pt"


def test_resume_skips_unreadable_metrics_lines(tmp_path):
    assert main(TINY + ["--out_dir", str(tmp_path), "--run_name", "m"]) == 0
    metrics = tmp_path / "m" / "metrics.jsonl"
    good = metrics.read_bytes()
    metrics.write_bytes(good + b'{"step": null, "loss": 1}\n' + b"\xff\xfe not utf-8\n" + b'["a list"]\n')
    assert main(["train", "--resume", str(tmp_path / "m"), "--steps", "3", "--no-progress"]) == 0
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]


def test_eval_of_a_step_file_is_named_as_itself(tmp_path, capsys):
    assert main(TINY + ["--out_dir", str(tmp_path), "--run_name", "s", "--ckpt_every", "1"]) == 0
    run = tmp_path / "s"
    (run / "eval-last.json").write_text("{}")
    step_file = run / "checkpoints" / "step_0000001.pt"
    assert main(["eval", str(step_file), "--episodes", "1", "--max-steps", "3", "--targets", "3600"]) == 0
    assert "checkpoint step_0000001 (step 1)" in capsys.readouterr().out
    assert json.loads((run / "eval-step_0000001.json").read_text())["checkpoint"] == "step_0000001"
    assert (run / "eval-last.json").read_text() == "{}"  # another step's result is never written over it


def test_evaluation_episodes_are_clamped_to_the_env_limit(tiny_runs):
    from dtd.evaluation import evaluate_run
    from dtd.runs import load_run

    model, info = load_run(tiny_runs["dt"])
    out = evaluate_run(model, info, episodes=1, targets=[3600.0], max_steps=10**12, progress=False)
    assert out["max_steps"] == 1000  # Hopper-v5's TimeLimit, not a (N, 10**12, ...) buffer


@pytest.fixture(scope="module")
def critic_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("critic")
    assert main(["iql", "train", "embedded:hopper", "--steps", "2", "--batch-size", "8", "--hidden", "8",
                 "--n-layers", "2", "--log-every", "0", "--ckpt-every", "0", "--out-dir", str(out),
                 "--run-name", "c"]) == 0
    return out / "c"


def test_policy_api_misuse_is_one_dtd_error(tiny_runs, critic_run, tmp_path):
    from dtd import Policy

    policy = Policy.load(tiny_runs["dt"], target=3600)
    obs = np.zeros((3, 11))
    policy.act(obs)
    with pytest.raises(DtdError, match=r"reward has shape \(2,\); expected a number or shape \(3,\)"):
        policy.act(obs, np.zeros(2))
    with pytest.raises(DtdError, match=r"reward has shape \(3, 1\)"):
        policy.act(obs, np.zeros((3, 1)))
    with pytest.raises(DtdError, match="reward is not numeric"):
        policy.act(obs, "high")
    for target in (float("nan"), float("inf"), 1e300):
        with pytest.raises(DtdError, match="not finite at reward scale"):
            Policy.load(tiny_runs["dt"], target=target)
        with pytest.raises(DtdError, match="not finite at reward scale"):
            policy.reset(target=target)
    with pytest.raises(DtdError, match="an IQL critic run .* dtd train --goal iql --critic"):
        Policy.load(critic_run)
    nan_run = tmp_path / "nan"
    shutil.copytree(tiny_runs["dt"], nan_run)
    ckpt = torch.load(nan_run / "checkpoints" / "last.pt", weights_only=False)
    next(iter(ckpt["model"].values())).fill_(float("inf"))
    torch.save(ckpt, nan_run / "checkpoints" / "last.pt")
    with pytest.raises(DtdError, match="weights are not finite"):
        Policy.load(nan_run)


def test_attention_outputs_are_written_as_one(tiny_runs, tmp_path, monkeypatch):
    """A failure while saving the figure (a full disk) leaves neither the CSV nor the JSON."""
    import matplotlib.figure

    from dtd.analysis import attention as att

    ws, summary = att.analyze_run(tiny_runs["dt"], windows=2, progress=False)

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    with pytest.raises(DtdError, match="attention_heatmap.png: could not write it .No space left on device."):
        att.write_outputs(ws, summary, tmp_path / "att")
    assert not (tmp_path / "att").exists()


def test_temporary_names_are_unique_per_process_and_call(tmp_path):
    from dtd.paths import temp_name

    names = {temp_name(tmp_path / "policy.pt") for _ in range(100)}
    assert len(names) == 100
    assert all(str(os.getpid()) in n.name and n.suffix == ".pt" and n.name.startswith(".") for n in names)
