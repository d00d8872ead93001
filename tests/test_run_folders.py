"""Issue #16: run folders and temporary files. A failed run leaves nothing that blocks the next one,
a stale lock or temporary folder from a killed process is taken over, a live trainer is never
overwritten, and a failed export leaves no temporary file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from dtd.cli import main
from dtd.errors import DtdError
from dtd.paths import LOCK_FILE, RUN_MARKER, is_run_dir


@pytest.fixture(autouse=True)
def keep_threads():
    """Runs here may set torch's thread count (--threads); the tests after them must not inherit it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

TINY = ["train", "--no-progress", "--hidden_size", "16", "--n_layer", "1", "--n_head", "2", "--model", "dt-small",
        "--context_len", "4", "--batch_size", "8", "--eval_episodes", "0", "--eval_untrained", "false",
        "--log_every", "0", "--ckpt_every", "0", "--threads", "1"]


def test_failed_run_leaves_nothing_then_the_same_name_trains(tmp_path, monkeypatch, capsys):
    import dtd.training.trainer as trainer

    out = tmp_path / "runs"
    nan = lambda pred, target, mask: (pred - target).sum() * float("nan")  # noqa: E731
    monkeypatch.setattr(trainer, "masked_mse", nan)
    assert main(TINY + ["--steps", "3", "--out_dir", str(out), "--run_name", "r"]) == 2
    assert "loss became nan" in capsys.readouterr().err
    assert not out.exists()  # neither the run folder nor the out_dir it created
    monkeypatch.undo()
    assert main(TINY + ["--steps", "2", "--out_dir", str(out), "--run_name", "r"]) == 0
    assert (out / "r" / "checkpoints" / "last.pt").is_file() and is_run_dir(out / "r")
    assert not (out / "r" / LOCK_FILE).exists()  # released at the end


def test_a_stub_without_checkpoint_is_replaced_and_a_stale_lock_taken_over(tmp_path, capsys):
    out = tmp_path / "runs"
    stub = out / "stub"
    (stub / "checkpoints").mkdir(parents=True)
    (stub / RUN_MARKER).write_text("")
    (stub / "config.yaml").write_text("lr: .inf\n")
    (stub / LOCK_FILE).write_text("999999999\n")  # its process is long gone
    assert main(TINY + ["--steps", "2", "--out_dir", str(out), "--run_name", "stub"]) == 0
    assert (stub / "checkpoints" / "last.pt").is_file()
    (stub / LOCK_FILE).write_text("999999999\n")
    assert main(["train", "--no-progress", "--resume", str(stub), "--steps", "3"]) == 0  # stale lock, resumed
    assert not (stub / LOCK_FILE).exists()
    capsys.readouterr()


def test_force_waits_for_a_live_trainer(tmp_path, capsys):
    out = tmp_path / "runs"
    args = TINY + ["--steps", "100000", "--max_minutes", "0", "--out_dir", str(out), "--run_name", "live"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "dtd", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (out / "live" / LOCK_FILE).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the trainer died early"
        assert main(TINY + ["--steps", "2", "--out_dir", str(out), "--run_name", "live", "--force"]) == 2
        err = capsys.readouterr().err
        assert f"process {proc.pid} is training this run right now" in err
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / "live" / LOCK_FILE).exists()  # left by the killed process: stale now
    assert main(TINY + ["--steps", "2", "--out_dir", str(out), "--run_name", "live", "--force"]) == 0


def test_collect_removes_stale_temporary_folders(tmp_path, monkeypatch, capsys):
    from dtd.data.collect import TEMP_PREFIX

    stale = tmp_path / f"{TEMP_PREFIX}999999999-abc"
    live = tmp_path / f"{TEMP_PREFIX}{os.getpid()}-abc"  # a live process's: left alone
    for d in (stale, live):
        (d / "x").mkdir(parents=True)
    assert main(["data", "collect", "--env", "Hopper-v5", "--policy", "random", "--steps", "20",
                 "--out", str(tmp_path / "ds")]) == 0
    assert not stale.exists() and live.exists() and (tmp_path / "ds").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ds", live.name])
    capsys.readouterr()


def test_failed_export_leaves_no_temporary_file(tiny_runs, tmp_path, monkeypatch):
    from dtd.export import export_run

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch.jit, "save", broken)
    with pytest.raises(DtdError, match=r"p\.pt: could not write it \(disk full\)"):  # one line naming the file
        export_run(tiny_runs["dt"], "torchscript", tmp_path / "p.pt")
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_a_run_but_keeps_the_out_dir_neighbours(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(TINY + ["--steps", "2", "--out_dir", str(out), "--run_name", "a"]) == 0
    (out / "b").mkdir()
    (out / "b" / "mine.txt").write_text("keep")
    (out / "a" / "extra.txt").write_text("inside the run")
    assert main(TINY + ["--steps", "2", "--out_dir", str(out), "--run_name", "a", "--force"]) == 0
    assert not (out / "a" / "extra.txt").exists() and (out / "b" / "mine.txt").read_text() == "keep"
    with pytest.raises(DtdError, match="not a dtd run folder"):
        from dtd.paths import check_run_target

        check_run_target(out, "b", True, "")
    shutil.rmtree(out)
    capsys.readouterr()
