"""TrainConfig: YAML presets with base inheritance, typed CLI overrides, errors naming file and field;
model options as one nested mapping checked against the chosen model (old spellings load into it);
and the spec's learning-rate schedule at hand-computed steps."""

import dataclasses
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
    assert (cfg.model, cfg.batch_size) == ("dtd", 256)
    assert cfg.model_options == {"dropout": 0.1, "bias": "all", "combiner": "c21", "norm_mode": "n3"}  # merged by key
    assert cfg.dataset == "zoo/hopper/medium-replay-v0" and cfg.eval_targets == [3600.0, 1800.0]
    assert (cfg.lr, cfg.warmup_steps, cfg.weight_decay, cfg.steps) == (2.0, 10000, 1e-4, 25000)
    assert cfg.seed == 3 and cfg.preset == "ablation/hopper-medium-replay-combiner-c21"
    assert load_config("hopper-medium-dt-small").batch_size == 64
    me = load_config("halfcheetah-medium-expert-dtd")
    assert me.dataset == "zoo/halfcheetah/medium-v0+zoo/halfcheetah/expert-v0"
    assert me.model_options == {"dropout": 0.1, "bias": "all", "combiner": "c22", "norm_mode": "n3"}


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
                                         "model_options": {"join_all": False, "n_layer": None, "ff_dim": "64"}}
    opts = load_config(None, overrides_from_args(args)).model_options
    assert opts == {"join_all": False, "ff_dim": 64} and type(opts["ff_dim"]) is int  # n_layer none: the default


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
                               ("batch_size", 0, ">= 1"), ("eval_workers", 0, ">= 1"), ("grad_clip", -0.1, ">= 0")]:
        with pytest.raises(DtdError, match=rf"--{field} must be {rule}, got"):
            TrainConfig(**{field: value}).check_ranges()
    for option, value, rule in [("dropout", 1.0, r"in \[0, 1\)"), ("dropout", float("nan"), r"in \[0, 1\)"),
                                ("hidden_size", 0, ">= 1")]:
        with pytest.raises(DtdError, match=rf"model option {option} must be {rule}, got"):  # at read time
            TrainConfig(model_options={option: value})
    with pytest.raises(DtdError, match="dtd model: head_init_scale must be a finite number > 0, got inf"):
        TrainConfig(model_options={"head_init_scale": float("inf")})  # the config class's own check, at read time
    TrainConfig(pct_traj=1.0, model_options={"dropout": 0.0}, grad_clip=0.0, eval_episodes=0).check_ranges()  # bounds
    with pytest.raises(DtdError, match="--eval_targets must be finite"):
        TrainConfig(eval_targets=[3600.0, float("nan")]).check_ranges()


def test_cli_refuses_out_of_range_before_any_work(tmp_path):
    r = _dtd("--steps", "-1", "--out_dir", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == "dtd: error: --steps must be >= 1, got -1"
    assert not any(tmp_path.iterdir())  # no run folder was made


# ---- model options: one nested mapping, checked against the chosen model ----------------------


def test_unknown_model_option_is_one_line_naming_the_model(tmp_path):
    with pytest.raises(DtdError, match=r"^model dtd: unknown option nosuch \(known: hidden_size, n_layer, n_head, "):
        load_config(None, {"model_opts": ["nosuch=1"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: dt-small\nmodel_options: {activation: gelu, ff_dim: 64}\n")  # ff_dim is DTd's
    with pytest.raises(DtdError, match=r"model dt-small: unknown option ff_dim \(known: .*activation\)"):
        load_config(str(bad))
    bad.write_text("model_options: [bias, all]\n")
    with pytest.raises(DtdError, match=r"bad.yaml: field 'model_options' expects a mapping"):
        load_config(str(bad))
    r = _dtd("--model_opts", "nosuch=1", "--out_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "model dtd: unknown option nosuch (known: hidden_size" in r.stderr and not (tmp_path / "runs").exists()


def test_option_of_another_model_is_refused_at_config_time(tmp_path):
    load_config(None, {"bias": "right"})  # a DTd option
    with pytest.raises(DtdError, match=r"model bc: unknown option bias \(known: hidden_size, n_layer, dropout\)"):
        load_config(None, {"model": "bc", "bias": "right"})
    with pytest.raises(DtdError, match="model bc: unknown options bias, combiner, norm_mode"):
        load_config("hopper-medium-dtd", {"model": "bc"})  # the preset's DTd options do not fit bc
    with pytest.raises(DtdError, match=r"dtd model: bias must be one of b0, left, right, all, got 'b3'"):
        load_config(None, {"bias": "b3"})  # the config class's own checks run when the config is read
    r = _dtd("--model", "bc", "--bias", "right", "--out_dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == ("dtd: error: model bc: unknown option bias "
                                                      "(known: hidden_size, n_layer, dropout)")
    assert not (tmp_path / "runs").exists()
    with pytest.raises(DtdError, match="unknown model 'gpt'"):
        load_config(None, {"model": "gpt"})


def test_old_spellings_load_to_the_same_model_as_the_nested_form(tmp_path):
    from dataclasses import asdict

    import yaml

    from dtd.config import config_from_dict
    from dtd.models import build_model

    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text("model: dtd\nbias: right\ncombiner: c23\nhidden_size: 32\nn_layer: null\n"
                   "model_opts: [ff_dim=64, join_timestep=true]\n")
    new.write_text("model: dtd\nmodel_options: {bias: right, combiner: c23, hidden_size: 32, ff_dim: 64, "
                   "join_timestep: true}\n")
    a, b = load_config(str(old)), load_config(str(new))
    assert a.model_options == b.model_options == {"bias": "right", "combiner": "c23", "hidden_size": 32, "ff_dim": 64,
                                                  "join_timestep": True}
    # the CLI spellings write the same mapping
    assert load_config(None, {"bias": "right", "combiner": "c23", "hidden_size": 32,
                              "model_opts": ["ff_dim=64", "join_timestep=true"]}).model_options == b.model_options
    # an old run folder's config.yaml: every model field at the top level (None = the default), model_opts a list
    saved = {**{k: v for k, v in asdict(TrainConfig()).items() if k != "model_options"},
             "hidden_size": 32, "n_layer": None, "n_head": None, "dropout": None, "bias": "right", "combiner": "c23",
             "norm_mode": None, "modality_emb": None, "join_all": None, "norm_joint": None, "waypoint_head": None,
             "model_opts": ["ff_dim=64", "join_timestep=true"]}
    c = config_from_dict(yaml.safe_load(yaml.safe_dump(saved)), "old/config.yaml")
    assert c.model_options == b.model_options
    models = [build_model(cfg.model, 11, 3, **cfg.model_options) for cfg in (a, b, c)]
    assert asdict(models[0].config) == asdict(models[1].config) == asdict(models[2].config)
    assert models[0].config.combiner == "c23" and models[0].config.ff_dim == 64


def test_saved_config_yaml_is_nested_and_round_trips(tmp_path):
    import yaml

    from dtd.config import config_from_dict, save_yaml

    cfg = load_config("ablation/hopper-medium-replay-combiner-c21",
                      {"join_all": True, "model_opts": ["head_init_scale=0.5"], "seed": 2})
    save_yaml(cfg, tmp_path / "config.yaml")
    data = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert data["model_options"] == {"dropout": 0.1, "bias": "all", "combiner": "c21", "norm_mode": "n3",
                                     "join_all": True, "head_init_scale": 0.5}
    assert not {"bias", "combiner", "hidden_size", "model_opts"} & set(data)
    assert config_from_dict(data, "config.yaml") == cfg


def test_option_values_are_typed_by_the_one_checker(tmp_path):
    from dtd.models import build_model

    opts = load_config(None, {"model_opts": ["join_timestep=yes", "ff_dim=64", "head_init_scale=0.5",
                                             "init=separate_qkv", "modality_emb=off"]}).model_options
    assert opts == {"join_timestep": True, "ff_dim": 64, "head_init_scale": 0.5, "init": "separate_qkv",
                    "modality_emb": False}
    assert [type(v) for v in opts.values()] == [bool, int, float, str, bool]
    assert load_config(None, {"model_options": {"dropout": 0}}).model_options == {"dropout": 0.0}  # int -> float
    for opt, message in [("ff_dim=six", "option ff_dim expects int, got 'six'"),
                         ("join_all=maybe", "option join_all expects bool, got 'maybe'"),
                         ("dropout=x", "option dropout expects float, got 'x'"), ("ff_dim", "expects key=value")]:
        with pytest.raises(DtdError, match=message):
            load_config(None, {"model_opts": [opt]})
    bad = tmp_path / "bad.yaml"
    for text, message in [("model_options: {ff_dim: '64'}", "option ff_dim expects int, got '64'"),
                          ("model_options: {join_all: 1}", "option join_all expects bool, got '1'"),
                          ("n_layer: two", "option n_layer expects int, got 'two'")]:
        bad.write_text(text + "\n")  # YAML values are typed: no text parsing there
        with pytest.raises(DtdError, match=message):
            load_config(str(bad))
    # build_model types strings through the same checker, and the same parser as the command line
    m = build_model("dtd", 11, 3, n_layer="1", join_all="on", dropout="0.2", hidden_size=16)
    assert (m.config.n_layer, m.config.join_all, m.config.dropout) == (1, True, 0.2)
    with pytest.raises(DtdError, match="model dtd: option n_layer expects int, got 'two'"):
        build_model("dtd", 11, 3, n_layer="two")
    r = _dtd("--hidden_size", "big")
    assert r.returncode == 2 and "--hidden_size expects int or null, got 'big'" in r.stderr


def test_help_lists_the_model_options_per_model():
    r = _dtd("--help")
    assert r.returncode == 0
    assert "bc: hidden_size=256 n_layer=3 dropout=0.1" in r.stdout
    assert "dt-large: hidden_size=168 n_layer=5 n_head=4" in r.stdout
    assert "dtd: hidden_size=128" in r.stdout and "head_init_scale=1.0" in r.stdout and "--model_opts" in r.stdout


def test_help_explains_every_field():
    """`dtd train --help` takes each field's meaning from its trailing comment in TrainConfig (and the model config
    classes), so a new field without one fails here."""
    from dtd.config import FIELDS, field_notes

    from dtd.config import IQLConfig
    from dtd.model_configs import IQLNetConfig

    assert set(FIELDS) <= set(field_notes(TrainConfig))
    for cls in (IQLConfig, IQLNetConfig):  # `dtd iql train --help` is built from them
        assert {f.name for f in dataclasses.fields(cls)} - {"state_dim", "act_dim"} <= set(field_notes(cls)), cls
    r = _dtd("--help")
    text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "torch.compile the training forward" in text
    assert "covering this fraction of steps (%BC)" in text  # argparse's % formatting left it alone
    assert "dtd: layers per modality encoder; dt-small/dt-large: transformer blocks; bc: hidden layers" in text


def test_iql_config_options_nested_and_old_runs_load():
    from dtd.config import IQLConfig, iql_config_from_dict

    old = iql_config_from_dict({"dataset": "x", "hidden": 16, "n_layers": 2}, "old/config.yaml")
    assert old == IQLConfig("x", model_options={"hidden": 16, "n_layers": 2})
    assert iql_config_from_dict(dataclasses.asdict(old), "config.yaml") == old
    with pytest.raises(DtdError, match=r"old/config.yaml: model iql: unknown option width \(known: hidden, n_layers\)"):
        iql_config_from_dict({"dataset": "x", "model_options": {"width": 3}}, "old/config.yaml")


def test_committed_old_run_configs_load():
    """The run records in results/ load with the options they name: older ones wrote them as top-level keys and a
    model_opts list (before model_options), newer ones as the nested model_options mapping."""
    from pathlib import Path

    import yaml

    from dtd.config import MODEL_FLAGS, config_from_dict, iql_config_from_dict

    files = sorted((Path(__file__).resolve().parents[1] / "results").rglob("config.yaml"))
    if not files:
        pytest.skip("no committed run records")
    for path in files:
        data = yaml.safe_load(path.read_text())
        if "expectile" in data:  # an IQL critic's record (experiments/goals.py): `dtd iql train`'s own config
            assert iql_config_from_dict(data, str(path)).steps == data["steps"]
            continue
        cfg = config_from_dict(data, str(path))
        want = dict(data.get("model_options") or {})
        want.update({k: data[k] for k in MODEL_FLAGS if data.get(k) is not None})
        for opt in data.get("model_opts") or []:
            key = opt.partition("=")[0]
            want[key] = cfg.model_options[key]  # present; its typing is test_option_values_are_typed_by_the_one_checker's
        assert cfg.model_options == want, path
