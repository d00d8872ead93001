"""TrainConfig: YAML presets with base inheritance, typed CLI overrides, errors naming file and field;
and the spec's learning-rate schedule at hand-computed steps."""

import subprocess
import sys

import pytest

from dtd.errors import DtdError
from dtd.config import PRESETS_DIR, TrainConfig, load_config
from dtd.training.schedule import lr_factor


def test_schedule_values():
    # linear warm-up: (t + 1) / warmup
    assert lr_factor(0, 10000) == pytest.approx(1e-4)
    assert lr_factor(4999, 10000) == pytest.approx(0.5)
    assert lr_factor(9999, 10000) == pytest.approx(1.0)
    # then 0.5 + 0.5 * 0.9997^(t - 10000)
    assert lr_factor(10000, 10000) == pytest.approx(1.0)
    assert lr_factor(11000, 10000) == pytest.approx(0.5 + 0.5 * 0.740785, abs=1e-5)  # 0.9997^1000 = exp(1000 ln 0.9997)
    assert lr_factor(25000, 10000) == pytest.approx(0.5 + 0.5 * 0.011101, abs=1e-5)  # 0.9997^15000
    assert lr_factor(10**7, 10000) == pytest.approx(0.5)


def test_scheduler_drives_optimizer():
    import torch

    from dtd.training.schedule import make_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = make_scheduler(opt, warmup_steps=4)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4, 1e-4 * (0.5 + 0.5 * 0.9997)])


def test_defaults_are_the_main_job():
    cfg = load_config()
    assert cfg == TrainConfig()
    assert cfg.dataset == "embedded:hopper" and cfg.model == "dtd" and cfg.grad_clip == 0.25
    from dtd.data.loaders import EMBEDDED_DATASET

    assert cfg.dataset == EMBEDDED_DATASET
    assert load_config("quick").dataset == cfg.dataset  # the preset spells the same job out


def test_preset_inheritance_and_overrides():
    cfg = load_config("ablation/hopper-medium-replay-combiner-c21", {"seed": 3, "lr": 2})
    assert (cfg.model, cfg.batch_size, cfg.bias, cfg.combiner, cfg.norm_mode) == ("dtd", 256, "all", "c21", "n3")
    assert cfg.dataset == "zoo/hopper/medium-replay-v0" and cfg.eval_targets == [3600.0, 1800.0]
    assert (cfg.lr, cfg.warmup_steps, cfg.weight_decay, cfg.steps) == (2.0, 10000, 1e-4, 25000)
    assert cfg.seed == 3 and cfg.preset == "ablation/hopper-medium-replay-combiner-c21"
    assert load_config("hopper-medium-dt-small").batch_size == 64
    me = load_config("halfcheetah-medium-expert-dtd")
    assert me.dataset == "zoo/halfcheetah/medium-v0+zoo/halfcheetah/expert-v0"
    assert me.model_overrides() == {"dropout": 0.1, "bias": "all", "combiner": "c22", "norm_mode": "n3"}


def test_every_preset_loads():
    names = [p.relative_to(PRESETS_DIR).with_suffix("").as_posix() for p in PRESETS_DIR.rglob("*.yaml")]
    assert len(names) > 40
    for name in names:
        load_config(name)


def test_yaml_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nlearning_rate: 3\n")
    with pytest.raises(DtdError, match=r"bad.yaml: unknown field 'learning_rate'"):
        load_config(str(bad))
    bad.write_text("steps: ten\n")
    with pytest.raises(DtdError, match=r"bad.yaml: field 'steps' expects int"):
        load_config(str(bad))
    bad.write_text("delayed: 1\n")
    with pytest.raises(DtdError, match=r"field 'delayed' expects bool"):
        load_config(str(bad))
    bad.write_text("base: nowhere-such-preset\n")
    with pytest.raises(DtdError, match="nowhere-such-preset"):
        load_config(str(bad))
    with pytest.raises(DtdError, match="no such file"):
        load_config("no-such-preset")
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: quick\nlr: 1\neval_targets: 5\nhidden_size: null\n")  # int -> float, scalar -> list
    cfg = load_config(str(ok))
    assert cfg.lr == 1.0 and cfg.eval_targets == [5.0] and cfg.preset == "ok"


def test_cli_overrides_are_typed():
    import argparse

    from dtd.config import add_config_arguments, overrides_from_args

    p = argparse.ArgumentParser()
    add_config_arguments(p)
    args = p.parse_args(["--lr", "3e-4", "--eval-targets", "1", "2", "--delayed", "--join_all", "false",
                         "--n_layer", "none", "--model_opts", "ff_dim=64"])
    assert overrides_from_args(args) == {"lr": 3e-4, "eval_targets": [1.0, 2.0], "delayed": True,
                                         "join_all": False, "n_layer": None, "model_opts": ["ff_dim=64"]}
    assert load_config(None, overrides_from_args(args)).model_overrides() == {"join_all": False, "ff_dim": "64"}


def _dtd(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dtd", "train", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nope: 1\n")
    r = _dtd("--config", str(bad))
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0
    assert "unknown field 'nope'" in r.stderr and str(bad) in r.stderr
    r = _dtd("--steps", "many")
    assert r.returncode != 0 and "--steps expects int" in r.stderr
    r = _dtd("--help")
    assert r.returncode == 0 and "--reward_scale" in r.stdout and "default: 1000.0" in r.stdout


def test_out_of_range_values_are_refused():
    TrainConfig().check_ranges()  # the defaults, and every preset, are in range
    for path in PRESETS_DIR.rglob("*.yaml"):
        load_config(str(path)).check_ranges()
    for field, value, rule in [("steps", -1, ">= 1"), ("lr", float("nan"), "> 0"), ("pct_traj", 0.0, r"in \(0, 1\]"),
                               ("dropout", 1.0, r"in \[0, 1\)"), ("batch_size", 0, ">= 1"),
                               ("eval_workers", 0, ">= 1"), ("grad_clip", -0.1, ">= 0")]:
        with pytest.raises(DtdError, match=rf"--{field} must be {rule}, got"):
            TrainConfig(**{field: value}).check_ranges()
    TrainConfig(pct_traj=1.0, dropout=0.0, grad_clip=0.0, eval_episodes=0).check_ranges()  # the bounds are allowed
    with pytest.raises(DtdError, match="--eval_targets must be finite"):
        TrainConfig(eval_targets=[3600.0, float("nan")]).check_ranges()


def test_cli_refuses_out_of_range_before_any_work(tmp_path):
    r = _dtd("--steps", "-1", "--out_dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "dtd: error: --steps must be >= 1, got -1"
    assert not any(tmp_path.iterdir())  # no run folder was made
