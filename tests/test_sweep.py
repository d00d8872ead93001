"""dtd sweep: specs, claims, kill -9 then rerun (complete, nothing run twice), the table, the CPU-recipe presets,
and the Ray backend (skipped without ray): the same records as the local backend, a killed worker's job resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dtd.cli import main as dtd_main
from dtd.errors import DtdError
from dtd.sweep import WandbCommand, load_spec, run_sweep
from dtd.sweep.claim import Claim

ROOT = Path(__file__).resolve().parents[1]
# 2 configs x 2 seeds of a tiny model on the embedded dataset; 200 steps with a checkpoint every 20, so a kill
# lands between two checkpoints; one evaluation (1 episode of 20 steps) at the end
TINY = """\
configs: [quick-bc, quick-dt-small]
fields: {steps: 200, batch_size: 8, context_len: 4, hidden_size: 16, n_layer: 1, eval_episodes: 1,
         eval_max_steps: 20, eval_untrained: false, log_every: 20, ckpt_every: 20, eval_every: 0, max_minutes: 0,
         threads: 1}
seeds: [0, 1]
runs: runs
records: records
"""
KILLED = "quick-dt-small-s0"  # the job a kill interrupts, here and in the Ray test
PINNED = {"DTD_COMMIT": "c" * 40, "DTD_CODE": "d" * 40}  # records name these (HEAD moves while a grid commits)


def tiny_spec(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(TINY)
    return folder / "tiny.yaml"


def wait_for(check, timeout: float, what: str) -> None:
    until = time.time() + timeout
    while not check():
        if time.time() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_spec_names_jobs_checks_fields_and_lists(tmp_path, capsys):
    spec = tmp_path / "grid.yaml"
    spec.write_text("configs: [quick-bc]\noverrides: {lr1e-3: {lr: 1e-3}, wide: {model_options: {hidden_size: 32}}}\n"
                    "fields: {steps: 10}\nseeds: [0, 1]\nsteps: {summary: {call: 'json:dumps', needs: all}}\n"
                    "wandb: proj\n")
    sweep = load_spec(spec)
    names = [j.name for j in sweep.jobs]
    assert names == ["quick-bc-lr1e-3-s0", "quick-bc-lr1e-3-s1", "quick-bc-wide-s0", "quick-bc-wide-s1", "summary"]
    assert sweep.jobs[0].args == ("--config", "quick-bc", "--steps", "10", "--lr", "1e-3", "--seed", "0")
    assert "--model_opts" in sweep.jobs[2].args and "hidden_size=32" in sweep.jobs[2].args
    assert sweep.jobs[0].tags == {"config": "quick-bc", "cell": "lr1e-3", "model": "bc", "seed": "0"}
    assert sweep.jobs[-1].needs == tuple(names[:4]) and sweep.where.records == tmp_path / "results" / "grid"
    assert sweep.wandb == {"project": "proj", "group": "grid"}
    cmd = WandbCommand("proj", "grid")(sweep.jobs[0], tmp_path)
    assert cmd[-4:] == ["--wandb", "proj", "--wandb_group", "grid"]
    assert dtd_main(["sweep", str(spec), "--list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [ln.split()[:2] for ln in out] == [["todo", n] for n in names]
    assert out[-1].endswith("(step, after " + " and ".join(names[:4]) + ")")
    spec.write_text("configs: [quick-bc]\nfields: {lr: fast}\n")
    with pytest.raises(DtdError, match="quick-bc: .*lr"):  # checked now, not in a worker hours later
        load_spec(spec)
    spec.write_text("configs: [quick-bc]\nseed: [0]\n")
    assert dtd_main(["sweep", str(spec), "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dtd: error: ") and "unknown key(s) seed" in err and err.count("\n") == 1


def test_a_claim_is_exclusive_and_a_dead_holders_claim_is_taken_over(tmp_path):
    first, second = Claim(tmp_path, "a"), Claim(tmp_path, "a")
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    first.path.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "since": 0}))
    assert Claim(tmp_path, "a").try_acquire()  # its process is gone: taken over at once
    os.utime(first.path, (0, 0))
    first.path.write_text(json.dumps({"pid": 1, "host": "another-host", "since": 0}))
    os.utime(first.path, (time.time() - 3600, time.time() - 3600))
    assert Claim(tmp_path, "a", stale_after=60).try_acquire()  # another host, no heartbeat for an hour


@pytest.fixture(scope="module")
def killed_and_rerun(tmp_path_factory):
    """The tiny sweep, one job at a time, killed (kill -9, the whole process group) while KILLED trains past
    its first checkpoint, then run again: (folder, records before the rerun, output of the rerun)."""
    folder = tmp_path_factory.mktemp("local")
    spec = tiny_spec(folder)
    env = dict(os.environ, PYTHONUNBUFFERED="1", **PINNED)
    cmd = [sys.executable, "-m", "dtd", "sweep", str(spec), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for(lambda: (folder / "runs" / KILLED / "checkpoints" / "last.pt").is_file(), 240, "a checkpoint")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {p.name: (p / "record.json").read_bytes() for p in (folder / "records").iterdir()}
    rerun = subprocess.run([*cmd[:-1], "2"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    return folder, before, rerun.stdout


def test_kill_9_then_rerun_completes_the_grid_and_runs_nothing_twice(killed_and_rerun):
    folder, before, out = killed_and_rerun
    records = folder / "records"
    names = sorted(p.name for p in records.iterdir())
    assert names == ["quick-bc-s0", "quick-bc-s1", "quick-dt-small-s0", "quick-dt-small-s1"]
    assert set(before) == {"quick-bc-s0", "quick-bc-s1"} and KILLED not in before
    assert f"{len(before)} of 4 jobs already have a record; {4 - len(before)} to run" in out
    for name, data in before.items():  # finished jobs were not run again
        assert (records / name / "record.json").read_bytes() == data
    for name in names:  # each job started fresh once; the killed one resumed once, from its checkpoint
        starts = [ln for ln in (folder / "runs" / "logs" / f"{name}.log").read_text().splitlines() if ln.startswith("$ ")]
        assert [("--resume" in ln) for ln in starts] == ([False, True] if name == KILLED else [False])
        info = json.loads((records / name / "record.json").read_text())
        assert info["name"] == name and info["args"][-2:] == ["--seed", name[-1]]
        assert [s["resume"] for s in info.get("segments", [{"resume": False}])] == \
            ([False, True] if name == KILLED else [False])
    assert not list((folder / "runs" / "claims").iterdir())  # every claim released
    metrics = [json.loads(ln) for ln in (records / KILLED / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(20, 201, 20)) + [200]  # one line per step: reads like one run


def test_table_has_last_and_best_per_cell(killed_and_rerun, capsys):
    folder = killed_and_rerun[0]
    assert dtd_main(["sweep", str(folder / "tiny.yaml"), "--table"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "| config | overrides | last | best |"
    assert [r.split(" | ")[0] for r in rows[2:]] == ["| quick-bc", "| quick-dt-small"]
    assert all(r.count("(n=2)") == 2 for r in rows[2:])
    assert run_sweep(load_spec(folder / "tiny.yaml"), workers=2) == 0  # all done: nothing to run


def test_cpu_recipe_presets_are_the_studys_recipe():
    """`cpu/<paper preset>` = the paper preset with experiments/study.py's arguments for its model."""
    sys.path.insert(0, str(ROOT / "experiments"))
    import argparse

    import study
    from dtd.config import add_config_arguments, load_config, overrides_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    for preset, model in (("hopper-medium-replay-dtd", "dtd"), ("halfcheetah-medium-dt-small", "dt-small"),
                          ("hopper-medium-expert-dt-large", "dt-large"), ("walker2d-medium-bc", "bc")):
        ours = load_config(f"cpu/{preset}")
        theirs = load_config(preset, overrides_from_args(parser.parse_args(list(study.budget(study.recipe(model))))))
        ours.preset = theirs.preset
        theirs.threads = ours.threads  # the study runs many one-thread workers; a user's run takes the cores
        assert ours == theirs, preset
    from dtd.config import PRESETS_DIR

    paper = sorted(p.stem for p in PRESETS_DIR.glob("*-medium*.yaml") if not p.stem.startswith("quick"))
    assert sorted(p.stem for p in (PRESETS_DIR / "cpu").glob("*.yaml")) == paper and len(paper) == 36
    assert all(load_config(f"cpu/{name}").steps == 4000 for name in paper)


@pytest.fixture(scope="module")
def ray_sweep(killed_and_rerun):
    """The same sweep as Ray tasks on a local Ray (2 CPUs), into the same run folders (moved aside first, so
    that config.yaml's out_dir and the commands match); KILLED's worker is killed (SIGKILL) once the job has a
    checkpoint. (folder, the local backend's records, the sweep's exit code, the killed worker's pid)."""
    ray = pytest.importorskip("ray")
    folder = killed_and_rerun[0]
    local = folder / "local-records"
    os.rename(folder / "records", local)
    shutil.rmtree(folder / "runs")
    old = {k: os.environ.get(k) for k in PINNED}
    os.environ.update(PINNED)  # inherited by the Ray workers this process starts
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result: dict[str, int] = {}
        sweep = threading.Thread(target=lambda: result.setdefault("code", run_sweep(load_spec(folder / "tiny.yaml"),
                                                                                    ray="auto")))
        sweep.start()
        claim = folder / "runs" / "claims" / f"{KILLED}.claim"

        def holder() -> int:
            try:
                return int(json.loads(claim.read_text())["pid"])
            except (OSError, ValueError, KeyError):
                return 0

        wait_for(lambda: (folder / "runs" / KILLED / "checkpoints" / "last.pt").is_file() and holder(), 240,
                 "a checkpoint of the Ray task")
        pid = holder()
        os.kill(pid, signal.SIGKILL)
        sweep.join(300)
        assert not sweep.is_alive(), "the Ray sweep did not finish"
    finally:
        ray.shutdown()
        for key, value in old.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    return folder, local, result["code"], pid


def comparable(records: Path) -> dict:
    """Every record's files without what differs by machine and time (machine, wall time, finish time, samples/s,
    evaluation seconds)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()
                    if k not in ("machine", "wall_seconds", "finished", "samples_per_s", "seconds", "env_steps_per_s")}
        return [strip(v) for v in value] if isinstance(value, list) else value

    out = {}
    for folder in sorted(records.iterdir()):
        metrics = [json.loads(ln) for ln in (folder / "metrics.jsonl").read_text().splitlines()]
        out[folder.name] = strip({"record": json.loads((folder / "record.json").read_text()), "metrics": metrics,
                                  "eval": json.loads((folder / "eval.json").read_text()),
                                  "config": (folder / "config.yaml").read_text()})
    return out


def test_ray_sweep_gives_the_local_backends_records(ray_sweep):
    folder, local, code, _ = ray_sweep
    assert code == 0
    ours, theirs = comparable(folder / "records"), comparable(local)
    assert sorted(ours) == ["quick-bc-s0", "quick-bc-s1", "quick-dt-small-s0", "quick-dt-small-s1"]
    assert ours["quick-bc-s0"]["record"]["commit"] == PINNED["DTD_COMMIT"]
    assert ours == theirs


def test_ray_worker_killed_mid_run_and_its_job_resumed(ray_sweep):
    folder, _, _, pid = ray_sweep
    info = json.loads((folder / "records" / KILLED / "record.json").read_text())
    assert [s["resume"] for s in info["segments"]] == [False, True]  # Ray retried the task; it resumed
    starts = [ln for ln in (folder / "runs" / "logs" / f"{KILLED}.log").read_text().splitlines() if ln.startswith("$ ")]
    assert len(starts) == 2 and "--resume" in starts[1]
    assert not list((folder / "runs" / "claims").iterdir())
    from dtd.paths import pid_alive

    assert not pid_alive(pid)


def test_ray_address_without_a_cluster_is_one_line(tmp_path, capsys):
    pytest.importorskip("ray")
    assert dtd_main(["sweep", str(tiny_spec(tmp_path)), "--ray", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dtd: error: --ray 127.0.0.1:1: no Ray cluster there") and err.count("\n") == 1


def summary_step(runs: Path, out: Path, label: str = "") -> list[str]:
    """A named step for the test below (specs name it "test_sweep:summary_step")."""
    (out / "summary.json").write_text(json.dumps({"runs": str(runs), "label": label}))
    return [f"summary {label}"]


def test_a_named_step_is_imported_where_it_runs(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("configs: [quick-bc]\nsteps: {sum: {call: 'test_sweep:summary_step', kwargs: {label: a}}}\n")
    step = load_spec(spec).jobs[-1]
    assert step.name == "sum" and step.needs == ("quick-bc-s0",)
    out = tmp_path / "out"
    out.mkdir()
    assert step.step(tmp_path, out) == ["summary a"]
    assert json.loads((out / "summary.json").read_text())["label"] == "a"
