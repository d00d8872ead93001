"""experiments/reference_dt.py (d3rlpy's DT on the diagnosis grid) and how make_diagnosis scores its records.

d3rlpy itself lives in its own venv and is not installed here; what can drift is checked: the script's
datasets, targets and scales against dtd's presets, and the scoring of its raw returns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from dtd.config import read_yaml, resolve_preset
from dtd.data.refscores import normalize, ref_scores

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import make_diagnosis  # noqa: E402
import reference_dt  # noqa: E402


@pytest.mark.parametrize("dataset", sorted(reference_dt.DATASETS))
def test_reference_matches_the_presets(dataset):
    spec, preset = reference_dt.DATASETS[dataset], read_yaml(resolve_preset(f"{dataset}-dt-small"))
    assert spec["minari"] == preset["dataset"] and spec["env"] == preset["env_id"]
    assert spec["targets"] == preset["eval_targets"]
    b = reference_dt.BUDGET
    assert b["reward_scale"] == preset["reward_scale"] and b["context"] == preset["context_len"]
    assert b["batch_size"] == preset["batch_size"] and b["weight_decay"] == preset["weight_decay"]
    assert b["clip"] == preset["grad_clip"] and b["dropout"] == preset["model_options"]["dropout"]


def test_reference_records_are_scored_like_dtd_runs(tmp_path):
    folder = tmp_path / make_diagnosis.REFERENCE
    folder.mkdir()
    returns = {"32000": {"3600": [500.0, 700.0], "1800": [400.0, 300.0]},
               "64000": {"3600": [900.0, 1100.0], "1800": [1200.0, 1300.0]}}
    for seed in (0, 1):
        (folder / f"hopper-medium-replay-lr1e-3-s{seed}.json").write_text(json.dumps(
            {"dataset": "hopper-medium-replay", "env": "Hopper-v5", "seed": seed, "returns": returns}))
    data = make_diagnosis.load(tmp_path)
    seeds = data[("hopper-medium-replay", "d3rlpy-dt-lr1e-3")]
    ref = ref_scores("Hopper-v5")
    assert sorted(seeds) == [0, 1]
    assert seeds[0]["evals"][32_000] == pytest.approx(float(np.mean(normalize(np.array([500.0, 700.0]), *ref))))
    assert seeds[0]["evals"][64_000] == pytest.approx(float(np.mean(normalize(np.array([1200.0, 1300.0]), *ref))))
    table = make_diagnosis.reference_table(data)
    assert "| 1e-3 | d3rlpy's DT | 2 | — |" in table  # no halfcheetah records: no mean over both datasets
    assert "d3rlpy's DT, lr 1e-3" in make_diagnosis.score_table(data, "hopper-medium-replay")
