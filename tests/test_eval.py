"""Evaluation: return-to-go arithmetic, env lookup, real Hopper-v5 rollouts, batched == naive, `dtd eval`."""

import json
import warnings
from dataclasses import asdict

import numpy as np
import pytest
import torch

from dtd.cli import main
from dtd.errors import DtdError
from dtd.envs import make_env, make_vector_env
from dtd.evaluation.settings import target_returns
from dtd.goals import ReturnToGo
from dtd.evaluation import EvalSettings, evaluate, evaluate_reference
from dtd.models import build_model

TINY = dict(hidden_size=16, n_layer=1, ff_dim=32, join_ff_dim=32, dropout=0.0)
REF = (-20.272305, 3234.3)  # D4RL hopper


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models on a shared 2-core box: one intra-op thread avoids spin-wait contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Damped(torch.nn.Module):
    """Small actions keep an untrained Hopper upright for tens of steps, so windows fill past K."""

    def __init__(self, model, scale=0.05):
        super().__init__()
        self.model, self.scale = model, scale

    def act(self, *args):
        return self.scale * self.model.act(*args)


def tiny_dtd(dtype=torch.float32, context_len=4):
    torch.manual_seed(0)
    model = build_model("dtd", 11, 3, context_len=context_len, **TINY).to(dtype).eval()
    return Damped(model)


def settings(**kw):
    base = dict(episodes=3, seed=7, state_mean=np.zeros(11), state_std=np.ones(11), context_len=4,
                max_steps=40, progress=False)  # fmt: skip
    return {**base, **kw}


def test_return_to_go_arithmetic():
    rtg = ReturnToGo(reward_scale=1000.0)
    g = rtg.reset(3600.0, np.zeros((2, 11)))
    assert g.shape == (2, 1) and np.allclose(g, 3.6)
    g = rtg.update(g, np.array([10.0, 500.0]), np.zeros((2, 11)))
    assert np.allclose(g[:, 0], [3.59, 3.1])
    g = rtg.update(g, np.array([-5.0, 0.0]), np.zeros((2, 11)))
    assert np.allclose(g[:, 0], [3.595, 3.1])
    delayed = ReturnToGo(reward_scale=1000.0, delayed=True)  # the sampler's delayed rtg is the whole return
    g = delayed.reset(1800.0, np.zeros((1, 11)))
    assert np.allclose(delayed.update(g, np.array([123.0]), np.zeros((1, 11))), 1.8)


def test_env_lookup():
    assert target_returns("Hopper-v5") == (3600.0, 1800.0)
    assert target_returns("HalfCheetah-v5") == (12000.0, 6000.0)
    assert target_returns("walker2d-medium-v2") == (5000.0, 2500.0)
    with pytest.raises(DtdError, match="no default target"):
        target_returns("CartPole-v1")
    with pytest.raises(DtdError, match="unknown Gymnasium environment"):
        make_env("Hopperz-v5")
    env = make_env("Hopper-v5")
    assert env.observation_space.shape == (11,)
    env.close()


def test_evaluate_real_hopper_episodes():
    result = evaluate(tiny_dtd(), EvalSettings(env_id="Hopper-v5", targets=[3600, 1800], **settings()))
    assert set(result["targets"]) == {"3600", "1800"}
    for key, t in result["targets"].items():
        returns, lengths = np.array(t["returns"]), np.array(t["lengths"])
        assert returns.shape == (3,) and np.isfinite(returns).all()
        assert ((lengths >= 1) & (lengths <= 40)).all()
        assert lengths.max() > 4  # the window slid past K at least once
        assert t["return_mean"] == pytest.approx(returns.mean()) and t["return_std"] == pytest.approx(returns.std())
        expected = 100 * (returns - REF[0]) / (REF[1] - REF[0])  # D4RL reference from dtd.data.refscores
        assert np.allclose(t["normalized"], expected)
        assert t["normalized_mean"] == pytest.approx(expected.mean())
    assert result["targets"]["3600"]["returns"] != result["targets"]["1800"]["returns"]  # the goal reaches the model
    assert result["env_steps"] == sum(sum(t["lengths"]) for t in result["targets"].values())
    best = max(result["targets"], key=lambda k: result["targets"][k]["normalized_mean"])
    assert result["best_target"] == best


def test_batched_equals_reference():
    # float64 weights: float32 matmuls are not batch-size invariant on CPU (gemm for N rows vs gemv for
    # one), so the last-bit differences would grow in the simulator; in float64 they vanish when the
    # action is rounded to float32 for the env, leaving only the bookkeeping under test.
    model = tiny_dtd(torch.float64)
    kw = settings(max_steps=120)
    batched = evaluate(model, EvalSettings(env_id="Hopper-v5", targets=[3600, 1800], **kw))
    naive = evaluate_reference(model, EvalSettings(env_id="Hopper-v5", targets=[3600, 1800], **kw))
    lengths = []
    for key in ("3600", "1800"):
        assert batched["targets"][key]["returns"] == naive["targets"][key]["returns"]
        assert batched["targets"][key]["lengths"] == naive["targets"][key]["lengths"]
        lengths += batched["targets"][key]["lengths"]
    assert len(set(lengths)) > 1  # episodes ended at different steps: the shrinking batch was exercised


class Recording(ReturnToGo):
    """The return-to-go, noting how many rows each call gets."""

    def __init__(self):
        super().__init__(1000.0)
        self.reset_rows, self.update_rows = [], []

    def reset(self, target, obs):
        self.reset_rows.append((target, len(obs)))
        return super().reset(target, obs)

    def update(self, goal, reward, next_obs):
        self.update_rows.append(len(goal))
        return super().update(goal, reward, next_obs)


def test_all_targets_in_one_rollout(monkeypatch):
    """Targets x episodes run as one vector env, and each target's episodes are exactly those of a batch
    of its own (today's per-target rollout) and of the one-at-a-time reference, in float32."""
    import dtd.evaluation.evaluator as evaluator

    made = []

    def spy(env_id, num_envs, *args, **kw):
        made.append(num_envs)
        return make_vector_env(env_id, num_envs, *args, **kw)

    model, kw = tiny_dtd(), settings(episodes=3, max_steps=80)
    monkeypatch.setattr(evaluator, "make_vector_env", spy)
    goal = Recording()
    together = evaluate(model, EvalSettings(env_id="Hopper-v5", targets=[3600, 1800], goal_fn=goal, **kw))
    assert made == [6]  # one rollout of 2 targets x 3 episodes
    assert goal.reset_rows == [(3600.0, 3), (1800.0, 3)] and set(goal.update_rows) == {3}  # a call per target
    alone = {key: evaluate(model, EvalSettings(env_id="Hopper-v5", targets=[float(key)], **kw))["targets"][key] for key in ("3600", "1800")}
    assert made == [6, 3, 3]
    naive = evaluate_reference(model, EvalSettings(env_id="Hopper-v5", targets=[3600, 1800], **kw))
    lengths = []
    for key in ("3600", "1800"):
        t = together["targets"][key]
        assert t == alone[key]  # the whole per-target summary: returns, lengths, scores
        assert t["returns"] == naive["targets"][key]["returns"] and t["lengths"] == naive["targets"][key]["lengths"]
        lengths += t["lengths"]
    assert len(set(lengths)) > 1  # episodes ended at different steps: the shrinking batch was exercised
    assert together["env_steps"] == sum(lengths) and together["episodes"] == 3


def test_workers_equal_one_process():
    """The targets x episodes split over forked processes, a split inside a target included: the same
    returns, lengths and order as one process."""
    model = tiny_dtd(torch.float64)
    kw = settings(episodes=5, max_steps=60)
    one = evaluate(model, EvalSettings(env_id="Hopper-v5", targets=[3600, 1800], **kw))
    three = evaluate(model, EvalSettings(env_id="Hopper-v5", targets=[3600, 1800], workers=3, **kw))  # 10 episodes: 3 + 4 + 3
    assert three["workers"] == 3 and one["workers"] == 1
    for key in ("3600", "1800"):
        assert three["targets"][key]["returns"] == one["targets"][key]["returns"]
        assert three["targets"][key]["lengths"] == one["targets"][key]["lengths"]
    assert three["env_steps"] == one["env_steps"]


def test_worker_failure_is_one_error():
    class Broken(torch.nn.Module):
        def act(self, *args):
            raise RuntimeError("boom")

    with pytest.raises(DtdError, match="evaluation worker .*RuntimeError: boom"):
        evaluate(Broken(), EvalSettings(env_id="Hopper-v5", targets=[3600], workers=2, **settings(episodes=2)))
    with pytest.raises(DtdError, match="workers must be >= 1"):
        evaluate(tiny_dtd(), EvalSettings(env_id="Hopper-v5", targets=[3600], workers=0, **settings()))
    with pytest.raises(DtdError, match="no target returns"):
        evaluate(tiny_dtd(), EvalSettings(env_id="Hopper-v5", targets=[], **settings()))


def test_delayed_keeps_the_goal_and_goal_fn_plugs_in():
    class Constant:  # a user goal object: the target, never updated
        goal_dim = 1

        def reset(self, target, obs):
            return np.full((len(obs), 1), target / 1000.0)

        def update(self, goal, reward, next_obs):
            return goal

    model = tiny_dtd(torch.float64)
    delayed = evaluate(model, EvalSettings(env_id="Hopper-v5", targets=[3600], delayed=True, **settings(episodes=2)))
    plugged = evaluate(model, EvalSettings(env_id="Hopper-v5", targets=[3600], goal_fn=Constant(), **settings(episodes=2)))
    assert delayed["targets"]["3600"]["returns"] == plugged["targets"]["3600"]["returns"]


def _write_run(run, model, step=123, **run_fields):
    """A run folder with one checkpoint written through the run record (what `dtd train` writes)."""
    from dtd.config import TrainConfig
    from dtd.runs import Checkpoint, RunInfo, save_checkpoint

    cfg = TrainConfig(env_id="Hopper-v5", eval_episodes=2, eval_max_steps=15, context_len=4,
                      dataset=str(run.parent / "gone"))  # a dataset that is not on this machine
    fields = dict(env_id="Hopper-v5", ref_scores=(0.0, 1000.0), goal="rtg", dataset=cfg.dataset, step=step)
    info = RunInfo("dtd", asdict(model.config), cfg, np.zeros(11, np.float32), np.ones(11, np.float32),
                   **{**fields, **run_fields})
    (run / "config.yaml").write_text("env_id: Hopper-v5\nseed: 0\n")
    save_checkpoint(Checkpoint(info, model.state_dict()), run / "checkpoints" / f"{'last' if step == 123 else 'step_5'}.pt")


def test_dtd_eval_cli(tmp_path, capsys, monkeypatch):
    import dtd.data.loaders as loaders

    def unreachable(*args, **kwargs):
        raise AssertionError("dtd eval must not load the dataset")

    monkeypatch.setattr(loaders, "load_dataset", unreachable)  # and the run's dataset path does not exist
    model = build_model("dtd", 11, 3, context_len=4, **TINY)
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").write_text('{"keep": true}')
    _write_run(run, model)
    assert main(["eval", str(run), "--targets", "1800", "--seed", "3"]) == 0
    result = json.loads((run / "eval-last.json").read_text())
    assert result["step"] == 123 and result["episodes"] == 2 and result["seed"] == 3
    t = result["targets"]["1800"]
    assert list(result["targets"]) == ["1800"] and max(t["lengths"]) <= 15
    assert np.allclose(t["normalized"], np.array(t["returns"]) / 10)  # the run's reference returns, not D4RL's
    assert json.loads((run / "eval.json").read_text()) == {"keep": True}  # training-time eval untouched
    assert "1800" in capsys.readouterr().out
    assert main(["eval", str(run), "--checkpoint", "step_5"]) == 2
    assert "no checkpoint 'step_5'" in capsys.readouterr().err
    assert main(["eval", str(run), "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    before = (run / "eval-last.json").read_text()
    assert main(["eval", str(run), "--targets", "nan"]) == 2
    assert "expected a finite number" in capsys.readouterr().err
    assert (run / "eval-last.json").read_text() == before  # nothing written
    # the dataset had no reference returns: D4RL's for the task, as during training
    _write_run(run, model, step=5, ref_scores=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["eval", str(run), "--checkpoint", "step_5", "--episodes", "1"]) == 0
    assert not [w for w in caught if "D4RL" in str(w.message)]  # no failed dataset load to warn about
    assert json.loads((run / "eval-step_5.json").read_text())["ref_scores"] == list(REF)


def test_dtd_eval_reads_a_dtd_0_1_checkpoint(tmp_path, capsys):
    """A flat dtd 0.1 checkpoint: same model and settings; it never recorded reference returns, so
    D4RL's are used with a warning (the dataset is not reloaded)."""
    from dtd.runs import read_checkpoint

    model = build_model("dtd", 11, 3, context_len=4, **TINY)
    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("env_id: Hopper-v5\nseed: 0\n")
    config = {"env_id": "Hopper-v5", "eval_episodes": 1, "eval_max_steps": 15, "dataset": str(tmp_path / "gone")}
    old = dict(model=model.state_dict(), model_name="dtd", model_kwargs=asdict(model.config),
               state_mean=np.zeros(11, np.float32), state_std=np.ones(11, np.float32), reward_scale=1000.0,
               config=config, optimizer={}, scheduler={}, rng={}, rng_ranks=[{}], step=7, world_size=1)
    torch.save(old, run / "checkpoints" / "last.pt")
    info = read_checkpoint(run / "checkpoints" / "last.pt").info
    assert (info.format, info.step, info.context_len, info.env_id, info.ref_scores) == (1, 7, 4, "Hopper-v5", None)
    with pytest.warns(UserWarning, match="D4RL"):
        assert main(["eval", str(run), "--targets", "1800"]) == 0
    assert json.loads((run / "eval-last.json").read_text())["ref_scores"] == list(REF)
    torch.save({"model": {}}, run / "checkpoints" / "last.pt")
    assert main(["eval", str(run)]) == 2
    assert "not a dtd checkpoint (missing model_name, model_kwargs, step)" in capsys.readouterr().err
