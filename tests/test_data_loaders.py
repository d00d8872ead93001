"""Every loader on files the tests write themselves, "A+B", the embedded dataset, and bad input."""

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from dtd.cli import main
from dtd.data import EMBEDDED_DATASET, load_dataset
from dtd.envs import check_env_compat
from dtd.data.collect import collect
from dtd.errors import DtdError


def write_d4rl(path: Path, n: int = 25, ends=(9, 19), obs_dim: int = 11, act_dim: int = 3, **overrides):
    """A D4RL-style file: episodes end at `ends` (terminal at 9, timeout at 19), 5 steps left over."""
    rng = np.random.default_rng(0)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[ends[0]] = True
    timeouts[ends[1]] = True
    arrays = {"observations": rng.normal(size=(n, obs_dim)), "actions": rng.uniform(-1, 1, (n, act_dim)),
              "rewards": np.arange(n, dtype=np.float64), "terminals": terminals, "timeouts": timeouts,
              "next_observations": rng.normal(size=(n, obs_dim))}
    arrays.update(overrides)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
        f["infos/goal"] = rng.normal(size=(n, 2))
    return arrays


def dt_trajectories(lengths=(7, 4), key="terminals"):
    rng = np.random.default_rng(1)
    return [{"observations": rng.normal(size=(T, 11)), "actions": rng.uniform(-1, 1, (T, 3)),
             "rewards": np.ones(T), key: np.eye(T, dtype=bool)[-1]} for T in lengths]


def write_pickle(path: Path, obj) -> Path:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    return path


@pytest.fixture(scope="module")
def minari_folder(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minari") / "rand"
    collect("Hopper-v5", "random", 150, seed=0, out=out, progress=False)
    return out


def test_d4rl_hdf5_split_at_terminals_and_timeouts(tmp_path):
    path = tmp_path / "hopper-medium-v2.hdf5"
    arrays = write_d4rl(path)
    ds = load_dataset(str(path))
    assert [len(ep) for ep in ds.episodes] == [10, 10, 5]  # trailing unfinished episode kept
    assert ds.episodes[0].terminals[-1] and not ds.episodes[0].timeouts[-1]
    assert ds.episodes[1].timeouts[-1] and not ds.episodes[1].terminals[-1]
    assert ds.episodes[2].timeouts[-1]  # ... and marked as cut
    np.testing.assert_allclose(ds.returns(), [45, 145, 110])
    assert ds.env_id == "Hopper-v5"  # guessed from the D4RL file name
    assert ds.goal_dim == 2 and ds.episodes[1].goals.shape == (10, 2)
    np.testing.assert_allclose(ds.episodes[1].infos["next_observations"], arrays["next_observations"][10:20])
    np.testing.assert_allclose(ds.normalized_score(3234.3), 100.0)


def test_dt_pickle_terminals_or_dones(tmp_path):
    ds = load_dataset(str(write_pickle(tmp_path / "t.pkl", dt_trajectories())))
    assert (ds.num_episodes, ds.num_steps, ds.obs_dim, ds.act_dim) == (2, 11, 11, 3)
    ds = load_dataset(str(write_pickle(tmp_path / "d.pkl", dt_trajectories(key="dones"))))
    assert ds.episodes[0].terminals[-1] and ds.env_id is None


def test_minari_folder_and_id(minari_folder, monkeypatch):
    ds = load_dataset(str(minari_folder))
    assert ds.env_id == "Hopper-v5" and ds.num_steps == 150 and ds.obs_dim == 11
    assert ds.episodes[-1].timeouts[-1] or ds.episodes[-1].terminals[-1]
    assert ds.reference_scores() == pytest.approx((-20.272305, 3234.3))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_folder.parent))
    by_id = load_dataset("rand")  # a Minari id relative to the root
    np.testing.assert_allclose(by_id.returns(), ds.returns())


def test_combined_sources(tmp_path, minari_folder):
    pkl = write_pickle(tmp_path / "t.pkl", dt_trajectories())
    ds = load_dataset(f"{minari_folder}+{pkl}")
    single = load_dataset(str(minari_folder))
    assert ds.num_episodes == single.num_episodes + 2 and ds.num_steps == 161
    assert ds.env_id == "Hopper-v5" and ds.ref_max_score == pytest.approx(3234.3)
    write_d4rl(tmp_path / "small.hdf5", obs_dim=4)
    with pytest.raises(DtdError, match="dims"):
        load_dataset(f"{pkl}+{tmp_path / 'small.hdf5'}")


def test_embedded_dataset_is_small_and_medium_quality():
    ds = load_dataset(EMBEDDED_DATASET)
    assert ds.env_id == "Hopper-v5" and (ds.obs_dim, ds.act_dim) == (11, 3)
    assert 1000 < ds.returns().mean() < 1700
    folder = Path(__import__("dtd.data.loaders").data.loaders.EMBEDDED_DIR)
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) <= 5_000_000
    check_env_compat(ds, "Hopper-v5")


def test_info_prints_statistics(capsys, minari_folder):
    assert main(["data", "info", str(minari_folder)]) == 0
    out = capsys.readouterr().out
    assert "episodes:" in out and "transitions:  150" in out and "normalized:" in out


def test_info_shared_medium_replay(shared_datasets, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(shared_datasets))
    assert main(["data", "info", "zoo/hopper/medium-replay-v0"]) == 0
    out = capsys.readouterr().out
    assert "episodes:     1385" in out and "transitions:  145380" in out


# ---- bad input: one line on stderr naming source and problem, exit != 0, no traceback ------------


def run_error(capsys, argv) -> str:
    assert main(argv) != 0
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("dtd: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_missing_file(capsys, tmp_path):
    err = run_error(capsys, ["data", "info", str(tmp_path / "nope.hdf5")])
    assert "nope.hdf5" in err and "no such file" in err


def test_unknown_minari_id(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert "no/such/dataset-v0" in run_error(capsys, ["data", "info", "no/such/dataset-v0"])


def test_truncated_and_corrupt_hdf5(capsys, tmp_path):
    path = tmp_path / "trunc.hdf5"
    write_d4rl(path, n=2000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "trunc.hdf5" in run_error(capsys, ["data", "info", str(path)])
    junk = tmp_path / "junk.hdf5"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    assert "junk.hdf5" in run_error(capsys, ["data", "info", str(junk)])


def test_corrupt_minari_folder(capsys, tmp_path, minari_folder):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(minari_folder, broken)
    h5 = broken / "data" / "main_data.hdf5"
    h5.write_bytes(h5.read_bytes()[:200])
    assert "broken" in run_error(capsys, ["data", "info", str(broken)])


@pytest.mark.parametrize("obj, problem", [
    ({"observations": np.zeros((3, 2))}, "list of trajectory dicts"),
    ([1, 2, 3], "list of trajectory dicts"),
    ([{"observations": np.zeros((3, 2)), "actions": np.zeros((3, 1))}], "lacks rewards"),
    ([{"observations": np.zeros((3, 2)), "actions": np.zeros((3, 1)), "rewards": np.zeros((3, 4)),
       "terminals": np.zeros(3)}], "shape"),
])
def test_wrong_shape_pickle(capsys, tmp_path, obj, problem):
    path = write_pickle(tmp_path / "bad.pkl", obj)
    err = run_error(capsys, ["data", "info", str(path)])
    assert "bad.pkl" in err and problem in err


def test_length_mismatch(capsys, tmp_path):
    trajs = dt_trajectories()
    trajs[1]["actions"] = trajs[1]["actions"][:-1]
    err = run_error(capsys, ["data", "info", str(write_pickle(tmp_path / "m.pkl", trajs))])
    assert "m.pkl" in err and "episode 1" in err and "actions has 3 steps" in err
    write_d4rl(tmp_path / "m.hdf5", actions=np.zeros((24, 3)))
    assert "actions has 24 steps" in run_error(capsys, ["data", "info", str(tmp_path / "m.hdf5")])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf(capsys, tmp_path, bad):
    trajs = dt_trajectories()
    trajs[0]["observations"][3, 2] = bad
    err = run_error(capsys, ["data", "info", str(write_pickle(tmp_path / "n.pkl", trajs))])
    assert "n.pkl" in err and "NaN or inf" in err


def test_empty(capsys, tmp_path):
    assert "empty" in run_error(capsys, ["data", "info", str(write_pickle(tmp_path / "e.pkl", []))])
    with h5py.File(tmp_path / "e.hdf5", "w") as f:
        for key, shape in [("observations", (0, 11)), ("actions", (0, 3)), ("rewards", (0,)), ("terminals", (0,))]:
            f[key] = np.zeros(shape)
    assert "empty" in run_error(capsys, ["data", "info", str(tmp_path / "e.hdf5")])


def test_unknown_env_and_dim_mismatch(capsys, tmp_path, minari_folder):
    err = run_error(capsys, ["data", "info", str(minari_folder), "--env", "NoSuchEnv-v9"])
    assert "NoSuchEnv-v9" in err and "unknown environment" in err
    err = run_error(capsys, ["data", "info", str(minari_folder), "--env", "HalfCheetah-v5"])
    assert "do not match HalfCheetah-v5" in err
    err = run_error(capsys, ["data", "collect", "--env", "NoSuchEnv-v9", "--policy", "random",
                             "--steps", "5", "--out", str(tmp_path / "x")])
    assert "unknown environment" in err and not (tmp_path / "x").exists()
