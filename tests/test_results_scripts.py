"""experiments/run_results.py and make_results.py: the job list and the tables from hand-made run folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _fake_run(folder: Path, preset: str, seed: int, scores: dict[str, float], curve: list[tuple[int, float]] = ()):
    """A run folder with what make_results reads: config.yaml, eval.json and metrics.jsonl."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"preset": preset, "dataset": "zoo/x", "seed": seed}))
    targets = {t: {"normalized_mean": v, "return_mean": 10 * v} for t, v in scores.items()}
    (folder / "eval.json").write_text(json.dumps({"targets": targets, "seconds": 2.0, "step": 400}))
    lines = [{"step": 20, "loss": 1.0, "samples_per_s": 200.0}]
    lines += [{"step": s, "eval": {"3600": {"normalized_mean": v}}} for s, v in curve]
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_make_results_tables_and_figures(tmp_path):
    runs = tmp_path / "runs"
    for seed, (a, b) in enumerate([(40.0, 30.0), (50.0, 20.0)]):  # DTd best 40 then 50 -> 45.0 ± 5.0
        _fake_run(runs / "main" / f"hopper-medium-dtd-s{seed}", "hopper-medium-dtd", seed, {"3600": a, "1800": b})
    _fake_run(runs / "main" / "hopper-medium-bc-s0", "hopper-medium-bc", 0, {"3600": 10.0, "1800": 12.0})
    for seed in range(3):
        _fake_run(runs / "main" / f"hopper-medium-replay-dtd-s{seed}", "hopper-medium-replay-dtd", seed,
                  {"3600": 20.0 + seed}, curve=[(0, 1.0), (100, 10.0 + seed), (200, 20.0 + seed)])
    _fake_run(runs / "main" / "hopper-medium-dt-small-s0-unfinished", "x", 0, {"3600": 99.0})  # not STEM-sSEED
    (runs / "main" / "hopper-medium-dt-large-s0").mkdir()  # started, no eval.json: not counted
    results = tmp_path / "RESULTS.md"
    results.write_text("intro\n<!-- BEGIN main -->\nold\n<!-- END main -->\n"
                       "<!-- BEGIN ablation -->\n<!-- END ablation -->\nend\n")
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "experiments" / "make_results.py"), "--runs", str(runs), "--out", str(out),
           "--results", str(results), "--no-attention"]
    env = {k: v for k, v in os.environ.items() if k != "MINARI_DATASETS_PATH"}  # no dataset-mean column
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("end\n")
    row = next(line for line in text.splitlines() if line.startswith("| hopper medium |"))
    assert row.split(" | ")[1:5] == ["**45.0 ± 5.0** (n=2)", "—", "—", "12.0 ± 0.0 (n=1)"]
    assert "| bias all (default) | 21.0 ± 0.8 |" in text  # the main table's DTd doubles as the ablation default
    tables = (out / "tables.md").read_text()
    assert "| 100 | 11.0 ± 0.8 | — |" in tables  # sample-efficiency rows: mean ± std over the seeds per step
    assert "99.0" not in tables
    for png in ("main_scores.png", "ablation.png", "sample_efficiency.png"):
        assert (out / png).stat().st_size > 1000


def test_make_results_without_runs_is_one_error(tmp_path):
    cmd = [sys.executable, str(ROOT / "experiments" / "make_results.py"), "--runs", str(tmp_path), "--out",
           str(tmp_path / "out"), "--results", str(tmp_path / "none.md"), "--no-attention"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("make_results: no finished runs")


def test_run_results_lists_every_job_once(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "run_results.py"), "--list", "--runs", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    names = [line.split("--run_name ")[1].split()[0] for line in lines if "--run_name" in line]
    assert len(names) == len(set(names)) == 4 * 4 * 3 + 5 * 3 + 4  # main, ablation (3 seeds), long curves
    assert all("--steps 400 --batch_size 64" in line for line in lines if "--run_name" in line)
    assert sum("-long-s" in name for name in names) == 4
