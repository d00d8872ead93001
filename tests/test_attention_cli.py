"""`dtd attention` end to end on the tiny DT and DTd runs of the `tiny_runs` fixture (trained a few steps)."""

import csv
import json

import numpy as np
import pytest

from dtd.analysis.attention import SCORE_NAMES
from dtd.cli import main

K = 4


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_dt_run_scores_every_window(tiny_runs, tmp_path, capsys):
    out = tmp_path / "dt"
    assert main(["attention", str(tiny_runs["dt"]), "--windows", "12", "--layer", "mean", "--out", str(out)]) == 0
    rows = _rows(out / "attention_scores.csv")
    assert len(rows) == 12 and list(rows[0]) == ["window", "length", *SCORE_NAMES]
    for r in rows:  # causal softmax: one unit of mass per valid token, 3 tokens a step
        assert sum(float(r[k]) for k in SCORE_NAMES) == pytest.approx(3 * int(r["length"]), rel=1e-4)
        assert 1 <= int(r["length"]) <= K
    summary = json.loads((out / "attention_summary.json").read_text())
    assert summary["model"] == "dt-small" and summary["windows"] == 12 and summary["layer"] == "mean"
    assert set(summary["symmetric"]) == {"rr", "ss", "aa", "rs+sr", "ra+ar", "sa+as"}
    means = np.array([np.mean([float(r[k]) for r in rows]) for k in SCORE_NAMES])
    np.testing.assert_allclose([summary["scores"][k] for k in SCORE_NAMES], means, rtol=1e-4)
    assert summary["symmetric"]["sa+as"] == pytest.approx(summary["scores"]["sa"] + summary["scores"]["as"])
    assert (out / "attention_heatmap.png").stat().st_size > 1000
    assert "sa+as" in capsys.readouterr().out


def test_dtd_run_reports_join_shares_and_bias_entropy(tiny_runs, tmp_path):
    out = tmp_path / "dtd"
    assert main(["attention", str(tiny_runs["dtd"]), "--windows", "8", "--out", str(out)]) == 0
    rows = _rows(out / "attention_scores.csv")
    for r in rows:  # the join holds (s, a) tokens: 2 a step, no goal tokens
        assert sum(float(r[k]) for k in SCORE_NAMES) == pytest.approx(2 * int(r["length"]), rel=1e-4)
        assert all(float(r[k]) == 0 for k in ("rr", "rs", "ra", "sr", "ar"))
    summary = json.loads((out / "attention_summary.json").read_text())
    assert summary["network"] == "join" and summary["tokens"] == ["s", "a"]
    assert set(summary["bias_entropy"]) == {"state", "action"}  # default bias "all"
    assert 0 <= summary["bias_entropy"]["state"]["normalized"] <= 1 + 1e-6


def test_rollout_windows_and_compare(tiny_runs, tmp_path):
    out = tmp_path / "cmp"
    assert main(["attention", "--compare", str(tiny_runs["dt"]), str(tiny_runs["dtd"]), "--windows", "4", "--rollout",
                 "--out", str(out)]) == 0
    assert (out / "attention_compare.png").stat().st_size > 1000
    summary = json.loads((out / tiny_runs["dt"].name / "attention_summary.json").read_text())
    assert summary["source"].startswith("rollouts of Hopper-v5") and summary["windows"] == 4


def test_bad_arguments_exit_2(tiny_runs, tmp_path, capsys):
    assert main(["attention", str(tiny_runs["dt"]), "--windows", "0", "--out", str(tmp_path)]) == 2
    assert main(["attention", str(tmp_path / "nope")]) == 2
    assert main(["attention"]) == 2
    err = capsys.readouterr().err
    assert "--windows" in err and "no such run folder" in err
