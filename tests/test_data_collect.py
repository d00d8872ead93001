"""dtd data collect: random and zoo SB3 policies -> Minari datasets that Minari itself opens."""

from pathlib import Path

import numpy as np
import pytest

from dtd.cli import main
from dtd.data import load_dataset
from dtd.data.collect import collect, detect_algorithm
from dtd.errors import DtdError


def test_collect_random_opens_with_minari(tmp_path, monkeypatch, capsys):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    argv = ["data", "collect", "--env", "Hopper-v5", "--policy", "random", "--steps", "120", "--seed", "3",
            "--dataset-id", "test/hopper/random-v0"]
    assert main(argv) == 0
    assert "transitions:  120" in capsys.readouterr().out
    mds = minari.load_dataset("test/hopper/random-v0")
    assert mds.total_steps == 120 and mds.env_spec.id == "Hopper-v5"
    assert mds.storage.metadata["ref_max_score"] == pytest.approx(3234.3)
    eps = list(mds.iterate_episodes())
    assert all(len(e.observations) == len(e.actions) + 1 for e in eps)  # Minari keeps the final obs
    assert eps[-1].terminations[-1] or eps[-1].truncations[-1]  # the budget cuts the last episode
    assert not [p for p in tmp_path.rglob(".dtd-collect-*")]  # temporary root removed
    assert main(argv) == 2  # the destination exists: refuse to overwrite
    assert "already exists" in capsys.readouterr().err


def test_collect_is_reproducible(tmp_path):
    a = load_dataset(str(collect("Hopper-v5", "random", 60, seed=5, out=tmp_path / "a", progress=False)))
    b = load_dataset(str(collect("Hopper-v5", "random", 60, seed=5, out=tmp_path / "b", progress=False)))
    c = load_dataset(str(collect("Hopper-v5", "random", 60, seed=6, out=tmp_path / "c", progress=False)))
    np.testing.assert_array_equal(a.episodes[0].actions, b.episodes[0].actions)
    np.testing.assert_array_equal(a.episodes[0].observations, b.episodes[0].observations)
    assert not np.array_equal(a.episodes[0].actions, c.episodes[0].actions)
    for noise in (-0.1, float("nan")):
        with pytest.raises(DtdError, match="--noise: must be >= 0"):
            collect("Hopper-v5", "random", 60, noise=noise, out=tmp_path / "bad", progress=False)


def test_collect_zoo_sac(shared_dir, tmp_path):
    policy = shared_dir / "zoo/sac/Hopper-v3_1/Hopper-v3.zip"
    out = collect("Hopper-v5", str(policy), 300, seed=0, out=tmp_path / "sac", progress=False)
    ds = load_dataset(str(out))
    assert ds.num_steps == 300 and ds.env_id == "Hopper-v5"
    assert ds.returns().max() > 200  # a trained hopper, unlike random (~20 per episode)
    noisy = load_dataset(str(collect("Hopper-v5", str(policy), 100, seed=0, out=tmp_path / "det",
                                     deterministic=True, noise=0.3, progress=False)))
    acts = np.concatenate([ep.actions for ep in noisy.episodes])
    assert np.abs(acts).max() <= 1.0  # noise clipped to the action bounds


def test_collect_zoo_vecnormalize_policy(shared_dir, tmp_path):
    policy = shared_dir / "zoo/a2c/Hopper-v3_1/Hopper-v3.zip"  # uses Hopper-v3/vecnormalize.pkl
    ds = load_dataset(str(collect("Hopper-v5", str(policy), 200, seed=0, out=tmp_path / "a2c",
                                  deterministic=True, progress=False)))
    assert ds.returns().max() > 150


def test_detect_algorithm(shared_dir):
    zoo = shared_dir / "zoo"
    found = {p.parts[-3]: detect_algorithm(p) for p in Path(zoo).glob("*/*_1/*.zip")}
    assert found and all(algo == folder for folder, algo in found.items()), found
