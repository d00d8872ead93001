"""`dtd report` on fake run folders: grouping, mean ± std over seeds, learning-curve PNG."""

import json

import pytest

from dtd.cli import main
from dtd.errors import DtdError
from dtd.evaluation.report import load_run_scores, write_report


def scores(values: dict[str, float]) -> dict:
    """Per-target scores as the trainer logs them in metrics.jsonl."""
    return {k: {"return_mean": 30 * v, "normalized_mean": v} for k, v in values.items()}


def result(values: dict[str, float]) -> dict:
    """A minimal evaluate() result (eval.json, eval-*.json)."""
    return {"targets": scores(values), "step": 200}


def fake_run(root, name, seed, final, curve, preset="hopper-medium-dtd", dataset="mujoco/hopper/medium-v0"):
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(f"preset: {preset}\ndataset: {dataset}\nseed: {seed}\n")
    lines = [{"step": s, "loss": 0.1} for s in (50, 150)]
    lines += [{"step": step, "eval": scores({"3600": v, "1800": v - 5})} for step, v in curve]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in sorted(lines, key=lambda x: x["step"])) + "\n")
    (run / "eval.json").write_text(json.dumps(result(final)))
    return run


def test_report_two_seeds(tmp_path):
    a = fake_run(tmp_path, "s0", 0, {"3600": 50.0, "1800": 40.0}, [(0, 1.0), (100, 20.0), (200, 48.0)])
    b = fake_run(tmp_path, "s1", 1, {"3600": 60.0, "1800": 70.0}, [(0, 3.0), (100, 30.0), (200, 58.0)])
    assert load_run_scores(a).curve == [(0, 1.0), (100, 20.0), (200, 48.0)]  # best target at each step
    written = write_report([a, b], tmp_path / "out")
    table = written["table"].read_text()
    row = next(line for line in table.splitlines() if line.startswith("| hopper-medium-dtd"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # best target per seed: 50 and 70 -> 60 ± 10; target 3600: 50, 60 -> 55 ± 5; 1800: 40, 70 -> 55 ± 15
    assert cells == ["hopper-medium-dtd", "mujoco/hopper/medium-v0", "2", "60.0 ± 10.0", "55.0 ± 5.0", "55.0 ± 15.0"]
    assert "target 3600 | target 1800" in table
    png = written["curves"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_report_groups_and_fallbacks(tmp_path, capsys):
    a = fake_run(tmp_path, "dtd", 0, {"3600": 10.0}, [(100, 10.0)])
    b = fake_run(tmp_path, "dt", 0, {"3600": 20.0}, [], preset="hopper-medium-dt-small")
    (b / "eval.json").unlink()  # no final eval.json: a later `dtd eval` result is used
    (b / "eval-last.json").write_text(json.dumps(result({"3600": 25.0})))
    assert main(["report", str(a), str(b), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| hopper-medium-dtd | mujoco/hopper/medium-v0 | 1 | 10.0 ± 0.0 |" in out
    assert "| hopper-medium-dt-small | mujoco/hopper/medium-v0 | 1 | 25.0 ± 0.0 |" in out
    assert (tmp_path / "rep" / "curves.png").is_file()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(DtdError, match="no evaluation yet"):
        load_run_scores(tmp_path / "empty")
    assert main(["report", str(tmp_path / "nope")]) == 2
