"""experiments/study.py, runner.py and make_results.py: the job order, the runner's idempotence, and RESULTS.md
built from hand-made records (last vs best, partial grids, the significance arithmetic, byte-for-byte output)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import make_results  # noqa: E402
import runner  # noqa: E402
import study  # noqa: E402

BLOCKS = ("study_budget", "study_main", "study_curves", "study_efficiency", "study_claims", "study_ablation",
          "study_attention", "study_compute", "study_seeds", "diagnosis_halfcheetah", "diagnosis_hopper", "diagnosis_recipe",
          "diagnosis_best", "diagnosis_reference", "diagnosis_probe", "diagnosis_saturation", "diagnosis_standstill")
HEAD = "a" * 40


def _record(records: Path, name: str, tags: dict, evals: dict[int, dict[str, float]], batch: int = 64,
            commit: str = HEAD, segments: int = 1, machine: str | None = None) -> None:
    """A record folder as the runner writes it; evals: step -> {target: normalized score}, the last one final."""
    folder = records / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"model: {tags.get('model', 'x')}\nbatch_size: {batch}\nseed: {tags['seed']}\n")
    lines = [{"step": 50, "loss": 1.0, "lr": 1e-4, "samples_per_s": 100.0},
             {"step": 100, "loss": 0.9, "lr": 1e-4, "samples_per_s": 200.0}]
    lines += [{"step": s, "eval": {t: {"normalized_mean": v, "return_mean": 10 * v} for t, v in ts.items()}}
              for s, ts in sorted(evals.items())]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    final = evals[max(evals)]
    (folder / "eval.json").write_text(json.dumps({"targets": {t: {"normalized_mean": v} for t, v in final.items()},
                                                  "step": max(evals)}))
    info = {"name": name, "tags": tags, "commit": commit, "wall_seconds": 600.0, "command": ["dtd", "train"]}
    if machine:
        info["machine"] = machine
    if segments > 1:
        info["segments"] = [{"commit": commit, "resume": i > 0} for i in range(segments)]
    (folder / "record.json").write_text(json.dumps(info))


def _main_run(records: Path, dataset: str, model: str, seed: int, evals: dict, **kw) -> None:
    tags = {"group": "main", "dataset": dataset, "model": model, "variant": "default", "seed": str(seed)}
    _record(records, f"{dataset}-{model}-s{seed}", tags, evals, **kw)


def _results_md(path: Path) -> Path:
    path.write_text("intro\n\n" + "".join(f"<!-- BEGIN {b} -->\nstale\n<!-- END {b} -->\n\n" for b in BLOCKS) + "end\n")
    return path


def _row(text: str, first: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.fixture()
def grid(tmp_path):
    """A partial grid: hopper medium DTd x3 seeds, DT-small x2, BC x1, no DT-large; one ablation seed; the
    dataset means and the attention step's record."""
    rec = tmp_path / "records"
    # DTd: seed 0 peaks mid-run (best 60 at 32k samples, target 1800) and ends at 40 -> last 40, best 60
    _main_run(rec, "hopper-medium", "dtd", 0, {500: {"3600": 50.0, "1800": 60.0}, 1000: {"3600": 40.0, "1800": 30.0}})
    _main_run(rec, "hopper-medium", "dtd", 1, {500: {"3600": 10.0}, 1000: {"3600": 50.0}})
    _main_run(rec, "hopper-medium", "dtd", 2, {500: {"3600": 20.0}, 1000: {"3600": 60.0}}, segments=2)
    _main_run(rec, "hopper-medium", "dt-small", 0, {500: {"3600": 20.0}, 1000: {"3600": 10.0}})
    _main_run(rec, "hopper-medium", "dt-small", 1, {500: {"3600": 30.0}, 1000: {"3600": 20.0}})
    _main_run(rec, "hopper-medium", "bc", 0, {500: {"3600": 5.0}, 1000: {"3600": 7.0}}, machine="CPU X, 2 cores")
    _main_run(rec, "hopper-medium-replay", "dtd", 0, {1000: {"3600": 30.0}})
    _record(rec, "hopper-medium-replay-bias-b0-s0", {"group": "ablation", "dataset": "hopper-medium-replay",
            "model": "dtd", "variant": "bias-b0", "seed": "0"}, {1000: {"3600": 12.0}})
    (rec / "datasets").mkdir()
    (rec / "datasets" / "means.json").write_text(json.dumps({"hopper-medium": {"mean_normalized": 48.5}}))
    (rec / "datasets" / "record.json").write_text(json.dumps({"name": "datasets", "tags": {"group": "datasets"},
                                                              "commit": HEAD}))
    att = rec / study.attention_name()
    att.mkdir()
    for model, share, network in (("dt-small", 1 / 9, "transformer"), ("dtd", 0.25, "join")):
        keys = [q + k for q in "rsa" for k in "rsa"]
        tokens = ["r", "s", "a"] if network == "transformer" else ["s", "a"]
        (att / f"{model}.json").write_text(json.dumps({
            "share": {k: share for k in keys}, "tokens": tokens, "network": network, "layer": "last",
            "windows": 256, "source": "zoo/hopper/medium-v0", "model": model}))
    (att / "record.json").write_text(json.dumps({"name": att.name, "tags": {"group": "attention"}, "commit": HEAD}))
    return rec


def _make(tmp_path, records, *extra, goals: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "experiments" / "make_results.py"), "--records", str(records),
           "--diagnosis", str(tmp_path / "no-diagnosis"), "--results", str(tmp_path / "RESULTS.md"),
           "--figures", str(tmp_path / "figures"), "--goals", str(goals or tmp_path / "no-goals"), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)


def test_make_results_fills_every_block_from_records(tmp_path, grid):
    results = _results_md(tmp_path / "RESULTS.md")
    proc = _make(tmp_path, grid)
    assert proc.returncode == 0, proc.stderr
    text = results.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("end\n")
    row = _row(text, "hopper medium")
    # DTd last: 40, 50, 60 -> 50.0 ± 8.2; best: 60 (the mid-run peak at the other target), 50, 60 -> 56.7 ± 4.7
    assert row[1:9] == ["50.0 ± 8.2", "56.7 ± 4.7", "15.0 ± 5.0 (n=2)", "25.0 ± 5.0 (n=2)", "—", "—",
                        "7.0 (n=1)", "7.0 (n=1)"]
    assert row[9] == "48.5"  # the dataset mean, from the datasets record
    assert re.fullmatch(r"\+35\.0 \[-?\d+\.\d, \d+\.\d\], p 0\.\d\d: (differ|no evidence) \(n=3 vs 2\)", row[10])
    assert _row(text, "halfcheetah medium")[1:] == ["—"] * 10  # no runs: every cell —
    # curves: one figure per dataset with runs, linked relative to RESULTS.md; the numbers per samples seen
    assert "![hopper medium](figures/curve_hopper-medium.png)" in text
    assert "**halfcheetah medium**: no runs yet." in text
    assert (tmp_path / "figures" / "curve_hopper-medium.png").stat().st_size > 1000
    assert not (tmp_path / "figures" / "curve_halfcheetah-medium.png").exists()
    assert _row(text, "32k")[1:] == ["30.0 ± 21.6", "25.0 ± 5.0 (n=2)", "—", "5.0 (n=1)"]  # DTd: 60, 10, 20
    # learning sooner: each run's mean over its evaluations (DTd: 50, 30, 40; DT-small: 15, 25; BC: 6)
    efficiency = text.split("<!-- BEGIN study_efficiency -->")[1].split("<!-- END")[0]
    cells = _row(efficiency, "hopper medium")
    assert cells[1:5] == ["40.0 ± 8.2", "20.0 ± 5.0 (n=2)", "—", "6.0 (n=1)"]
    assert cells[5].startswith("+20.0 [") and cells[5].endswith("(n=3 vs 2)")
    # the claims: DTd − DT-small last, +35 [10.1, 59.9] (ahead; df 2.88); no DT-large (untested); DTd −
    # DT-small over the curve, +20 with the same standard error, so an interval that holds 0 (no evidence)
    claims = text.split("<!-- BEGIN study_claims -->")[1].split("<!-- END")[0]
    cells = _row(claims, "hopper medium")
    assert cells[1] == "+35.0 [10.1, 59.9], p 0.02: differ (n=3 vs 2)"
    assert cells[2] == "— (n=3 vs 0)"
    assert cells[3].startswith("+20.0 [") and cells[3].endswith(": no evidence (n=3 vs 2)")
    assert _row(claims, "hopper medium-replay")[1:] == ["— (n=1 vs 0)"] * 3
    assert _row(claims, "**datasets**")[1:] == ["ahead 1, behind 0, no evidence 0, untested 5",
                                                "ahead 0, behind 0, no evidence 0, untested 6",
                                                "ahead 0, behind 0, no evidence 1, untested 5"]
    # pooled over the datasets with 2 seeds a side: here hopper medium alone, so exactly its Welch row
    pooled = _row(claims, "**mean over datasets**")
    assert pooled[1:3] == ["+35.0 [10.1, 59.9], p 0.02: ahead (1 dataset)", "—"]
    assert pooled[3].startswith("+20.0 [") and pooled[3].endswith(": no evidence (1 dataset)")
    # ablation: the default row is the main grid's DTd; a variant is compared with it
    assert _row(text, "bias all, c22 (default)")[1:3] == ["30.0 (n=1)", "30.0 (n=1)"]
    assert _row(text, "bias b0 (no goal)")[1:4] == ["12.0 (n=1)", "12.0 (n=1)", "— (n=1 vs 1)"]
    assert _row(text, "combiner c23 (gate)")[1:4] == ["—", "—", "— (n=0 vs 1)"]
    assert "![ablation](figures/curve_ablation.png)" in text  # its curves, once a variant has a run
    assert (tmp_path / "figures" / "curve_ablation.png").stat().st_size > 1000
    # attention from the step's record; DTd's join has no goal token
    assert _row(text, "state → action")[1:] == ["11.1%", "25.0%"]
    assert _row(text, "goal → goal")[1:] == ["11.1%", "n/a"]
    block = text.split("<!-- BEGIN study_attention -->")[1].split("<!-- END")[0]
    pairs = [ln.split(" | ")[0][2:] for ln in block.splitlines()[3:] if " → " in ln.split(" | ")[0]]
    assert pairs == [f"{q} → {k}" for q in ("goal", "state", "action") for k in ("goal", "state", "action")]
    assert (tmp_path / "figures" / "attention_study.png").is_file()
    # compute: progress against the study's job list, the resumed run flagged
    assert f"Progress: 10 of {len(study.jobs())} jobs of experiments/study.py have a record." in text
    assert "other arguments" not in text
    # the machine, where a record names one (the fake metrics log 100 and 200 samples/s: median 150)
    assert "Machines (named by the records written since 2026-12-01; median training samples/s by model): " \
           "CPU X, 2 cores: 1 record(s), BC 150." in text
    # 79 jobs left: 61 at the 600 s every run here took; the 18 DT-large runs have no measured cost yet
    assert ("Left: 79 jobs, about 10 worker-hours at the wall per run above (about 5 h of wall time with 2 workers; "
            "an estimate, not a measurement), not counting 18 run(s) of models with no whole run yet.") in text
    assert "1 run(s) were resumed" in text and "| hopper-medium-dtd-s2 | 60.0 | 60.0 (64k) | 2 | aaaaaaa | 10 min (resumed) |" in text


def test_the_ablation_figure_waits_for_a_variant(tmp_path, grid):
    """The default row alone (the main grid's DTd) is no ablation: no figure, no link."""
    shutil.rmtree(grid / "hopper-medium-replay-bias-b0-s0")
    blocks = make_results.build(grid, tmp_path / "no-diagnosis", tmp_path / "figures", tmp_path)
    assert "![ablation]" not in blocks["study_ablation"]
    assert not (tmp_path / "figures" / "curve_ablation.png").exists()
    assert (tmp_path / "figures" / "curve_hopper-medium-replay.png").is_file()


def test_make_results_is_byte_for_byte_and_check(tmp_path, grid):
    results = _results_md(tmp_path / "RESULTS.md")
    assert _make(tmp_path, grid, "--check").returncode == 1  # stale blocks
    assert _make(tmp_path, grid).returncode == 0
    first = results.read_bytes()
    pngs = {p.name: p.read_bytes() for p in (tmp_path / "figures").glob("*.png")}
    assert _make(tmp_path, grid).returncode == 0
    assert results.read_bytes() == first
    assert {p.name: p.read_bytes() for p in (tmp_path / "figures").glob("*.png")} == pngs
    proc = _make(tmp_path, grid, "--check")
    assert proc.returncode == 0 and "up to date" in proc.stdout
    _main_run(grid, "hopper-medium", "dt-large", 0, {1000: {"3600": 33.0}})  # a new record lands
    assert _make(tmp_path, grid, "--check").returncode == 1


def test_records_of_other_arguments_are_flagged(tmp_path, grid):
    """After RECIPE changes, records made with the old arguments stay (done) but --list and the tables say so."""
    job = next(j for j in study.jobs() if j.name == "hopper-medium-dtd-s1")
    for name, args in (("hopper-medium-dtd-s0", ["--config", "hopper-medium-dtd", "--lr", "1e-3"]),
                       ("hopper-medium-dtd-s1", list(job.args))):
        info = json.loads((grid / name / "record.json").read_text())
        (grid / name / "record.json").write_text(json.dumps(dict(info, args=args)))
    _results_md(tmp_path / "RESULTS.md")
    assert _make(tmp_path, grid).returncode == 0
    assert "**1 record(s) were made with other arguments than experiments/study.py gives now** (they are in the " \
           "tables): hopper-medium-dtd-s0." in (tmp_path / "RESULTS.md").read_text()
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "study.py"), "--list", "--records", str(grid)],
                          capture_output=True, text=True, check=True)
    states = {ln.split()[1]: ln.split()[0] for ln in proc.stdout.splitlines()}
    assert states["hopper-medium-dtd-s0"] == "stale" and states["hopper-medium-dtd-s1"] == "done"
    assert states["hopper-medium-dtd-s2"] == "done"  # a record without args (older runner): unknown, not stale


def test_make_results_refuses_a_missing_block(tmp_path, grid):
    (tmp_path / "RESULTS.md").write_text("<!-- BEGIN study_main -->\n<!-- END study_main -->\n")
    proc = _make(tmp_path, grid)
    assert proc.returncode != 0 and "has no block" in proc.stderr


def test_diagnosis_recipe_table_marks_each_factors_best_once_every_option_has_two_seeds():
    import make_diagnosis as md

    def seeds(*checkpoints):  # one (32k, 64k) pair of scores per seed
        return {i: {"evals": {32_000: a, 64_000: b}, "probe": {}, "loss": 0.1} for i, (a, b) in enumerate(checkpoints)}

    data = {}
    for d in md.DATASETS:
        data[(d, "bc-lr3e-4")] = seeds((10, 20), (10, 20))  # mean 15, swing 10
        data[(d, "bc-lr1e-3")] = seeds((30, 10), (30, 10))  # mean 20, swing 20: best despite the swing
        data[(d, "bc-lr1e-4")] = seeds((5, 5), (5, 7))  # mean 5.5, swing 1
    data[("hopper-medium-replay", "dtd-lr3e-4")] = seeds((1, 3))
    rows = {(r[0], r[1], r[2]): r for r in (_row_cells(ln) for ln in md.recipe_table(data).splitlines()[2:])}
    assert rows[("BC", "lr", "1e-3 ✓")][3:] == ["4", "20.0", "20.0", "20.0", "20.0"]
    assert rows[("BC", "lr", "3e-4")][6:] == ["15.0", "10.0"] and rows[("BC", "lr", "1e-4")][6:] == ["5.5", "1.0"]
    dtd = [r for k, r in rows.items() if k[0] == "DTd"]
    assert not any("✓" in r[2] for r in dtd)  # DTd's options are incomplete: nothing is chosen yet
    assert rows[("DTd", "lr", "3e-4")][3:] == ["1", "—", "2.0", "—", "2.0"]
    best = {r[0]: r for r in (_row_cells(ln) for ln in md.best_cells(data).splitlines()[2:])}
    assert best["BC"][1:] == ["BC, lr 1e-3", "20.0", "BC, centre (15.0)"] and "DTd" not in best  # DTd: no complete cell


def _row_cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_left_text_costs_ablations_as_dtd_until_their_own_runs_are_in():
    todo = [study.train_job("ablation", "hopper-medium-replay", "dtd", 0, "bias-b0"),
            study.train_job("main", "hopper-medium", "bc", 1)]
    assert make_results.left_text(todo, {"DTd": 7200.0, "BC": 3600.0}).startswith(
        "Left: 2 jobs, about 3 worker-hours at the wall per run above (about 2 h of wall time with 2 workers;")
    assert "about 2 worker-hours" in make_results.left_text(todo, {"DTd": 7200.0, "DTd ablations": 3600.0, "BC": 3600.0})
    assert make_results.left_text(todo[:1], {"BC": 60.0}).endswith("not counting 1 run(s) of models with no whole run yet.")
    assert make_results.left_text([], {}) == "Left: nothing; the grid is in."


def test_verdict_says_which_side_is_ahead():
    assert make_results.verdict([10.0, 11.0, 12.0], [1.0, 2.0, 3.0]) == "ahead"
    assert make_results.verdict([1.0, 2.0, 3.0], [10.0, 11.0, 12.0]) == "behind"
    assert make_results.verdict([1.0, 5.0, 9.0], [2.0, 6.0, 7.0]) == "no evidence"
    assert make_results.verdict([1.0], [2.0, 3.0]) == "untested"


def test_welch_on_known_numbers():
    w = make_results.welch([1, 2, 3, 4, 5], [3, 4, 5, 6, 7])  # t = -2, df = 8: p 0.08051, t(0.975, 8) 2.306
    assert w["diff"] == pytest.approx(-2.0) and w["df"] == pytest.approx(8.0)
    assert w["p"] == pytest.approx(0.080516, abs=1e-5)
    assert (w["lo"], w["hi"]) == (pytest.approx(-2 - 2.306004, abs=1e-5), pytest.approx(-2 + 2.306004, abs=1e-5))
    w = make_results.welch([1.0, 3.0], [0.0, 0.0, 0.0])  # a side without spread: df = 1, t(0.975, 1) = 12.706
    assert w["df"] == pytest.approx(1.0) and w["hi"] - w["diff"] == pytest.approx(12.706205, abs=1e-5)
    same = [20.0, 30.0, 40.0]
    assert make_results.differ_text(same, same).endswith(": no evidence")
    assert make_results.differ_text(same, same).startswith("+0.0 [")
    assert make_results.differ_text([80.0, 82.0, 81.0], [20.0, 22.0, 21.0]).startswith("+60.0 [")
    assert make_results.differ_text([80.0, 82.0, 81.0], [20.0, 22.0, 21.0]).endswith(": differ")
    assert make_results.differ_text([20.0, 22.0, 21.0], [80.0, 82.0, 81.0]).endswith(": differ")
    assert make_results.differ_text([10.0, 50.0, 90.0], [20.0, 60.0, 70.0]).endswith(": no evidence")
    assert make_results.differ_text([1.0], [2.0, 3.0]) == "— (n=1 vs 2)"
    assert make_results.differ_text([], []) == "—"
    assert make_results.welch([5.0, 5.0], [5.0, 5.0])["p"] == 1.0  # no spread, no difference


def test_pooled_welch_averages_the_datasets_and_is_welch_for_one():
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [3.0, 4.0, 5.0, 6.0, 7.0]
    one = make_results.pooled_welch([(a, b), ([1.0], [2.0, 3.0])])  # the second has 1 seed a side: left out
    assert one["datasets"] == 1 and one["p"] == pytest.approx(make_results.welch(a, b)["p"])
    # -2 and +2.5 -> +0.25; s²/n per side 0.5, 0.5, 4/3, 1/12: se sqrt(29/12)/2, df 5.7406 (by hand)
    w = make_results.pooled_welch([(a, b), ([10.0, 12.0, 14.0], [9.0, 9.5, 10.0])])
    assert w["diff"] == pytest.approx(0.25) and w["df"] == pytest.approx(5.7406, abs=1e-4)
    half = scipy.stats.t.ppf(0.975, w["df"]) * (29 / 12) ** 0.5 / 2
    assert (w["lo"], w["hi"]) == (pytest.approx(0.25 - half), pytest.approx(0.25 + half))
    assert make_results.pooled_welch([([1.0], [2.0])]) is None


def test_study_lists_every_job_once_in_run_order(tmp_path):
    records = tmp_path / "records"
    (records / "hopper-medium-dtd-s0").mkdir(parents=True)
    (records / "hopper-medium-dtd-s0" / "record.json").write_text("{}")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "study.py"), "--list", "--records", str(records)],
                          capture_output=True, text=True, check=True)
    lines = proc.stdout.splitlines()
    names = [ln.split()[1] for ln in lines]
    assert len(names) == len(set(names)) == 89 == len(study.jobs())  # 72 main runs, 15 ablation runs, 2 steps
    assert sum(n.startswith("attention-") or n == "datasets" for n in names) == 2
    assert sum("-bias-" in n or "-combiner-" in n for n in names) == 15
    assert lines[1].startswith("done hopper-medium-dtd-s0") and all(ln.startswith("todo") for ln in lines[2:])
    assert names[0] == "datasets"
    # the attention step comes right after the two runs it reads
    assert names.index("attention-hopper-medium-s0") == max(names.index("hopper-medium-dtd-s0"),
                                                            names.index("hopper-medium-dt-small-s0")) + 1
    assert "(step, after hopper-medium-dt-small-s0 and hopper-medium-dtd-s0)" in lines[names.index("attention-hopper-medium-s0")]
    seed = lambda n: int(n.rsplit("-s", 1)[1])  # noqa: E731
    main = [n for n in names if "-s" in n and "-bias-" not in n and "-combiner-" not in n and not n.startswith("attention")]
    ablation = [n for n in names if "-bias-" in n or "-combiner-" in n]
    late = [n for n in main if n.startswith("halfcheetah") and "-dt-large-" in n]
    assert len(late) == 9 and names[-9:] == late  # DT-large on halfcheetah last: the part the issue may drop
    core = [n for n in main if n not in late]
    assert [seed(n) for n in core] == sorted(seed(n) for n in core)  # seed 0 of every row, then 1, then 2
    for s in (0, 1, 2):  # hopper before halfcheetah within a seed; DTd and DT-small side by side
        rows = [n for n in core if seed(n) == s]
        envs = [n.split("-")[0] for n in rows]
        assert envs == sorted(envs, key=lambda e: e != "hopper")
        assert rows.index(f"hopper-medium-dt-small-s{s}") == rows.index(f"hopper-medium-dtd-s{s}") + 1
    first_s2, last_s1 = names.index("hopper-medium-dtd-s2"), names.index("halfcheetah-medium-expert-bc-s1")
    assert all(last_s1 < names.index(n) < first_s2 for n in ablation if seed(n) < 2)  # ablation s0/s1 after main s1
    assert all(names.index(n) > names.index("halfcheetah-medium-expert-bc-s2") for n in ablation if seed(n) == 2)
    train = [ln for ln in lines if "--config" in ln]
    for job in study.jobs():  # every run trains with its model's recipe
        if not job.step:
            assert " ".join(study.budget(study.recipe(job.tags["model"]))) in lines[names.index(job.name)]
    assert all("--eval_episodes 10" in ln for ln in train)
    assert any("--config ablation/hopper-medium-replay-combiner-c21 " in ln for ln in train)


def test_a_models_recipe_departs_from_the_common_one_for_its_runs_only(monkeypatch):
    monkeypatch.setattr(study, "RECIPE", {"lr": "3e-4", "batch_size": 64, "warmup_fraction": 0.1, "samples": 256_000})
    monkeypatch.setattr(study, "MODEL_RECIPE", {"dtd": {"lr": "1e-3", "batch_size": 256,
                                                        "model_opts": ["head_init_scale=0.1"]}})
    args = {j.name: " ".join(j.args) for j in study.jobs() if not j.step}
    assert "--lr 1e-3 --batch_size 256 --steps 1000 --warmup_steps 100 --eval_every 125" in args["hopper-medium-dtd-s0"]
    assert "--model_opts head_init_scale=0.1" in args["hopper-medium-replay-bias-b0-s1"]  # the ablation is DTd too
    other = "--lr 3e-4 --batch_size 64 --steps 4000 --warmup_steps 400 --eval_every 500"
    assert other in args["hopper-medium-dt-small-s0"] and "--model_opts" not in args["hopper-medium-dt-small-s0"]
    table = make_results.budget_table()
    assert "AdamW lr 3e-4" in table and "DTd: lr 1e-3, batch_size 256, model_opts head_init_scale=0.1" in table
    assert "DT-small (the authors' DT script): 10 x 10,000 steps x 64 = 6.4M" in table  # the spec's budgets
    assert "3 episodes per target every 2,500 steps" in table


def test_runner_resumes_from_a_checkpoint_and_restarts_otherwise(tmp_path):
    job = runner.Job("x-s0", ("--config", "quick", "--seed", "0"))
    fresh = runner.command(job, tmp_path)
    assert "--force" in fresh and fresh[fresh.index("--run_name") + 1] == "x-s0" and "--resume" not in fresh
    (tmp_path / "x-s0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "x-s0" / "checkpoints" / "last.pt").write_bytes(b"")
    resume = runner.command(job, tmp_path)
    assert resume[-3:] == ["--resume", str(tmp_path / "x-s0"), "--no-progress"] and "--config" not in resume


FAKE_TRAIN = """
import json, sys
from pathlib import Path
run = Path(sys.argv[1]); run.mkdir(parents=True, exist_ok=True)
(run / "config.yaml").write_text("batch_size: 64\\n")
(run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}) + "\\n")
(run / "eval.json").write_text(json.dumps({"targets": {"1": {"normalized_mean": 1.0}}}))
sys.exit(int(sys.argv[2]))
"""


@pytest.fixture()
def fake_train(monkeypatch):
    """runner.command -> a script that writes a run's three files (exit code per job name: '-bad' fails)."""
    real = runner.command
    calls = []

    def command(job, runs):
        cmd = real(job, runs)
        calls.append((job.name, "--resume" in cmd))
        return [sys.executable, "-c", FAKE_TRAIN, str(runs / job.name), "1" if "-bad" in job.name else "0", *cmd[3:]]

    monkeypatch.setattr(runner, "command", command)
    monkeypatch.setenv("MINARI_DATASETS_PATH", "unused")
    return calls


def test_runner_records_skip_and_name_the_commit(tmp_path, fake_train):
    runs, records = tmp_path / "runs", tmp_path / "records"
    jobs = [runner.Job("a-s0", ("--config", "quick"), {"model": "dtd", "seed": "0"}),
            runner.Job("b-s0", ("--config", "quick"), {"model": "bc", "seed": "0"})]
    (runs / "b-s0" / "checkpoints").mkdir(parents=True)  # b was interrupted after a checkpoint
    (runs / "b-s0" / "checkpoints" / "last.pt").write_bytes(b"")
    (runs / "logs").mkdir()
    (runs / "logs" / "b-s0.segments.jsonl").write_text(json.dumps({"commit": "0" * 40, "resume": False}) + "\n")
    assert runner.run_all(jobs, runs, records, workers=2) == 0
    assert sorted(fake_train) == [("a-s0", False), ("b-s0", True)]
    a = json.loads((records / "a-s0" / "record.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", a["commit"]) and a["commit"].startswith(head)
    assert a["args"] == ["--config", "quick"]
    code = subprocess.run(["git", "log", "-1", "--format=%H", "--", "src", "configs"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    assert a["code"].startswith(code) and code  # what trains, unmoved by record commits
    assert a["tags"] == {"model": "dtd", "seed": "0"} and a["wall_seconds"] >= 0 and "segments" not in a
    assert re.search(r", \d+ cores, torch \S+$", a["machine"])  # throughput is only comparable per machine
    assert sorted(p.name for p in (records / "a-s0").iterdir()) == ["config.yaml", "eval.json", "metrics.jsonl",
                                                                    "record.json"]
    b = json.loads((records / "b-s0" / "record.json").read_text())
    assert b["commit"] == "0" * 40 and [s["resume"] for s in b["segments"]] == [False, True]  # started, resumed
    fake_train.clear()
    assert runner.run_all(jobs, runs, records, workers=2) == 0  # every job has a record: nothing runs
    assert fake_train == []


def test_runner_steps_wait_for_their_needs_and_failures_block_them(tmp_path, fake_train):
    runs, records = tmp_path / "runs", tmp_path / "records"
    seen = []

    def step(runs_dir: Path, out: Path) -> list[str]:
        seen.append(sorted(p.name for p in records.iterdir() if not p.name.startswith(".")))
        (out / "summary.json").write_text("{}")
        return ["a step"]

    jobs = [runner.Job("a-s0", ("x",)), runner.Job("st", (), step=step, needs=("a-s0", "c-s0")),
            runner.Job("c-s0", ("x",)), runner.Job("d-bad", ("x",)), runner.Job("st2", (), step=step, needs=("d-bad",))]
    assert runner.run_all(jobs, runs, records, workers=2) == 1  # d-bad failed, st2 could not run
    assert seen == [["a-s0", "c-s0"]]  # the step ran once, after both its needs
    st = json.loads((records / "st" / "record.json").read_text())
    assert st["command"] == ["a step"] and (records / "st" / "summary.json").is_file()
    assert not (records / "d-bad").exists() and not (records / "st2").exists()
    assert runner.run_all(jobs[:3], runs, records, workers=1) == 0 and len(seen) == 1  # done steps are skipped


def test_commit_record_commits_that_folder_only(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, check=True).stdout  # noqa: E731
    git("init", "-q")
    git("config", "user.email", "t@example.com")
    git("config", "user.name", "t")
    (repo / "other.txt").write_text("staged, not part of the record\n")
    git("add", "other.txt")
    (repo / "results" / "study" / "a-s0").mkdir(parents=True)
    (repo / "results" / "study" / "a-s0" / "record.json").write_text("{}")
    assert runner.commit_record(repo / "results" / "study" / "a-s0", repo)
    assert git("show", "--name-only", "--format=%s", "HEAD").split() == ["record", "results/study/a-s0",
                                                                         "results/study/a-s0/record.json"]
    assert git("diff", "--cached", "--name-only").split() == ["other.txt"]  # still staged, not committed


def test_diagnosis_standstill_counts_the_episodes_that_stay_at_the_start(tmp_path):
    import make_diagnosis as md

    for seed, scores in ((0, [2.1, 30.0, 2.2]), (1, [31.0, 29.0, 1.9])):
        run = tmp_path / f"halfcheetah-medium-replay-dtd-lr3e-4-s{seed}"
        run.mkdir()
        (run / "eval.json").write_text(json.dumps({"targets": {"12000": {"normalized": scores[:2]},
                                                               "6000": {"normalized": scores[2:]}}}))
    row = _row_cells(next(ln for ln in md.standstill_table(tmp_path).splitlines() if ln.startswith("| DTd, centre")))
    assert row[1:] == ["2", "3 of 6", "30.0"]


def test_study_datasets_step_reads_the_presets_datasets(shared_datasets, tmp_path, monkeypatch):
    """The study's first job: each dataset's own mean normalized return, from the preset's dataset."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(shared_datasets))
    monkeypatch.setattr(study, "DATASETS", ("hopper-medium-replay",))
    study.datasets_step(tmp_path, tmp_path)
    means = json.loads((tmp_path / "means.json").read_text())["hopper-medium-replay"]
    assert means["source"] == "zoo/hopper/medium-replay-v0" and means["episodes"] == 1385
    assert means["mean_normalized"] == pytest.approx(7.9, abs=0.05)  # ../shared/datasets/README.md's figure


def test_study_attention_step_summarises_both_runs(tiny_runs, tmp_path, monkeypatch):
    """The attention job reads the seed-0 DT-small and DTd checkpoints by their study names."""
    monkeypatch.setitem(study.ATTENTION, "windows", 8)
    for model, run in (("dt-small", tiny_runs["dt"]), ("dtd", tiny_runs["dtd"])):
        (tmp_path / f"{study.ATTENTION['dataset']}-{model}-s0").symlink_to(run)
    out = tmp_path / "out"
    out.mkdir()
    cmds = study.attention_step(tmp_path, out)
    assert len(cmds) == 2 and {p.name for p in out.iterdir()} == {"dt-small.json", "dtd.json"}
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        study.attention_step(tmp_path / "missing", out)


GOAL_BLOCKS = ("goals_data", "goals_maze", "goals_fixed", "goals_rerun", "goals_maze_curves", "goals_iql",
               "goals_critics", "goals_tokens", "goals_compute", "goals_seeds")


def _fixed(records: Path, run: str, tags: dict, score: float) -> None:
    """The fixed start/goal step's record of `run`."""
    folder = records / f"{run}-fixed"
    folder.mkdir()
    (folder / "eval.json").write_text(json.dumps({"targets": {"1": {"normalized_mean": score}}}))
    (folder / "record.json").write_text(json.dumps({"name": folder.name, "tags": {**tags, "group": "maze-fixed"},
                                                    "commit": HEAD}))


def test_goal_sections_from_hand_made_records(tmp_path, grid):
    """experiments/goals.py's records: maze runs scored by success x100 (last / best), the fixed start/goal
    step (PointMaze's from its reruns here), the reruns against the grid's runs, the datasets' ends, an IQL-goal
    run beside the study's return-to-go runs, Welch on seeds."""
    goals = tmp_path / "goals"
    for seed, (dtd, dt) in enumerate(((80.0, 40.0), (90.0, 50.0), (100.0, 45.0))):
        for model, last in (("dtd-b1", dtd), ("dt", dt)):
            name, tags = f"antmaze-umaze-{model}-s{seed}", {"group": "maze", "dataset": "antmaze-umaze",
                                                            "model": model, "seed": str(seed)}
            _record(goals, name, tags, {500: {"1": last / 2}, 4000: {"1": last}})
            _fixed(goals, name, tags, last - 10)
    point = {"dataset": "pointmaze-medium", "model": "dtd-b1"}
    for seed, last in enumerate((80.0, 100.0)):
        _record(goals, f"pointmaze-medium-dtd-b1-s{seed}", {**point, "group": "maze", "seed": str(seed)},
                {4000: {"1": last}})
    rerun = {**point, "group": "maze-rerun", "seed": "0"}
    _record(goals, "pointmaze-medium-dtd-b1-s0-rerun", rerun, {4000: {"1": 95.0}}, segments=2)
    _fixed(goals, "pointmaze-medium-dtd-b1-s0-rerun", rerun, 70.0)
    _record(goals, "hopper-medium-dtd-iql-s0", {"group": "iql", "dataset": "hopper-medium", "model": "dtd", "seed": "0"},
            {500: {"1": 20.0}, 1000: {"1": 70.0}})
    data = goals / "data-antmaze-umaze"
    data.mkdir()
    (data / "dataset.json").write_text(json.dumps({"episodes": 100, "transitions": 50_000, "mean_length": 500.0,
                                                   "ends": {"goal": 60, "flip": 15, "time": 25},
                                                   "collect": {"steps_per_second": 1234.5}}))
    (data / "info.txt").write_text("return:       mean 0.6, min 0.0, max 1.0\n")
    (data / "record.json").write_text(json.dumps({"name": data.name, "tags": {"group": "data", "dataset":
                                                  "antmaze-umaze"}, "commit": HEAD}))
    tokens = goals / "goal-tokens-hopper-medium"
    tokens.mkdir()
    (tokens / "tokens.json").write_text(json.dumps({
        "episodes": 40, "v_small": -1.0, "v_large": 9.0, "token_percentiles": {"10": 0.1, "50": 0.5, "90": 0.9},
        "first_token_percentiles": {"10": 0.4, "50": 0.5, "90": 0.6}, "corr_mean_token_return": -0.9,
        "corr_first_token_return": 0.05, "bottom_quartile": {"return": 100.0, "mean_token": 0.8},
        "top_quartile": {"return": 2500.0, "mean_token": 0.3}}))
    (tokens / "record.json").write_text(json.dumps({"name": tokens.name, "tags": {"group": "tokens", "dataset":
                                                    "hopper-medium"}, "commit": HEAD}))
    results = tmp_path / "RESULTS.md"
    results.write_text("".join(f"<!-- BEGIN {b} -->\nstale\n<!-- END {b} -->\n" for b in (*BLOCKS, *GOAL_BLOCKS)))
    assert _make(tmp_path, grid, goals=goals).returncode == 0
    text = results.read_text()
    assert "stale" not in text
    row = _row(text.split("<!-- BEGIN goals_maze -->")[1], "AntMaze umaze")
    assert row[1:3] == ["90.0 ± 8.2", "90.0 ± 8.2"] and row[7:9] == ["45.0 ± 4.1", "45.0 ± 4.1"]
    w = scipy.stats.ttest_ind([80, 90, 100], [40, 50, 45], equal_var=False)
    assert row[9].startswith("+45.0 [") and f"p {w.pvalue:.2f}: differ" in row[9]
    assert "| AntMaze umaze | 100 | 50,000 | 500 | 60% at the goal, 15% in a flip, 25% at the time limit | 1,234 steps/s |" in text
    fixed = text.split("<!-- BEGIN goals_fixed -->")[1]
    assert _row(fixed, "AntMaze umaze")[1] == "80.0 ± 8.2" and _row(fixed, "AntMaze umaze")[4] == "35.0 ± 4.1"
    assert _row(fixed, "AntMaze umaze")[-1] == "the grid runs"
    assert _row(fixed, "PointMaze medium")[1] == "70.0 (n=1)" and "reruns" in _row(fixed, "PointMaze medium")[-1]
    reruns = text.split("<!-- BEGIN goals_rerun -->")[1].split("<!-- END")[0]
    assert "| PointMaze medium | DTd-b1 + waypoints | 90.0 ± 10.0 (n=2) | 95.0 (n=1) |" in reruns
    assert "| s0: 80 → 95 |" in reruns
    assert "pointmaze-medium-dtd-b1-s0-rerun | 95.0 | 95.0 (256k) | 70 |" in text and "10 min (resumed) |" in text
    assert "1 run(s) were resumed" in text
    iql = _row(text.split("<!-- BEGIN goals_iql -->")[1], "hopper medium")
    assert iql[1] == "70.0 (n=1)" and iql[2] == "50.0 ± 8.2"  # the study's DTd runs of the grid fixture (last)
    assert (tmp_path / "figures" / "curve_antmaze-umaze.png").is_file()
    assert "| hopper medium | 40 | -1.0, 9.0 | 0.10 / 0.50 / 0.90 | 0.40 / 0.50 / 0.60 | -0.90 | +0.05 | 100, 0.80 | 2,500, 0.30 |" in text
    assert "| halfcheetah medium-replay | — |" in text.split("<!-- BEGIN goals_tokens -->")[1]
    # 6 AntMaze runs + their 6 fixed steps + the dataset + the IQL run + the tokens + 2 PointMaze runs + a rerun + its
    # fixed step
    assert "Progress: 19 of" in text
    first = results.read_bytes()
    assert _make(tmp_path, grid, "--check", goals=goals).returncode == 0 and results.read_bytes() == first


def test_goal_pointmaze_reruns_repeat_the_grid_runs_and_take_the_fixed_goal():
    """PointMaze's reruns train exactly what its grid runs did (same arguments and seed), come after every grid
    job, and only they (not the GPU runs, whose checkpoints are gone) get a fixed start/goal step."""
    import goals

    jobs = goals.jobs()
    by_name = {j.name: j for j in jobs}
    reruns = [j for j in jobs if j.tags["group"] == "maze-rerun"]
    assert len(reruns) == 24 and all(j.args == by_name[j.name.removesuffix(goals.RERUN)].args for j in reruns)
    first = jobs.index(reruns[0])
    assert all(j.tags["group"] in ("maze-rerun", "maze-fixed") for j in jobs[first:])
    fixed = {j.needs[0] for j in jobs if j.tags["group"] == "maze-fixed"}
    assert fixed == {j.name for j in jobs if j.tags["group"] in ("maze", "maze-rerun") and
                     (j.tags["group"] == "maze-rerun" or j.name.startswith("ant"))}
    assert all(jobs.index(by_name[goals.fixed_name(n)]) == jobs.index(by_name[n]) + 1 for n in fixed)


def test_goal_critic_step_takes_only_a_finished_critic(tmp_path):
    """A killed `dtd iql train` leaves an intermediate checkpoint: the critic step must not record it as done."""
    import goals

    run = tmp_path / "iql-x"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    (run / "config.yaml").write_text("steps: 10\n")
    (run / "metrics.jsonl").write_text('{"step": 5, "q_loss": 1.0}\n')
    assert not goals._critic_finished(run)
    (run / "metrics.jsonl").write_text('{"step": 5, "q_loss": 1.0}\n{"step": 10, "q_loss": 0.5}\n')
    assert goals._critic_finished(run)


def test_goal_datasets_missing_on_a_new_machine_are_rebuilt_and_checked(tmp_path, monkeypatch, capsys):
    """The maze data is not in git: before a run that needs it starts, a dataset whose step has a record is rebuilt
    from its seed and must hold what the record says; a different rebuild stops the grid with one line."""
    import goals

    monkeypatch.setattr(goals, "ROOT", tmp_path)
    monkeypatch.setattr(goals, "MAZE_STEPS", 300)
    maze, records = "pointmaze-umaze", tmp_path / "records"
    reference = tmp_path / "reference"
    goals.collect(maze, reference)
    stats = goals._stats(reference)
    (records / f"data-{maze}").mkdir(parents=True)
    (records / f"data-{maze}" / "record.json").write_text("{}\n")
    (records / f"data-{maze}" / "dataset.json").write_text(json.dumps({**stats, "collect": None}))
    todo = [j for j in goals.jobs() if j.name == f"{maze}-dt-s1"]
    data = tmp_path / goals.maze_data(maze)

    assert goals.restore_datasets(todo, records) == 0
    assert data.is_dir() and goals._stats(data) == stats  # the same seed gives the same data
    assert goals.restore_datasets(todo, records, build=None) == 0  # there already: nothing rebuilt

    shutil.rmtree(data)
    (records / f"data-{maze}" / "dataset.json").write_text(json.dumps({**stats, "episodes": stats["episodes"] + 1}))
    capsys.readouterr()
    assert goals.restore_datasets(todo, records) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from the recorded one" in err[0]
    assert not data.exists() and data.with_name(data.name + ".differs").is_dir()  # a second start rebuilds again

    shutil.rmtree(records / f"data-{maze}")  # no record: the dataset step itself builds it, in the grid
    assert goals.restore_datasets(todo, records, build=None) == 0 and not data.exists()


def test_value_goal_stats_on_a_known_critic():
    """Episodes whose tokens fall as their return rises: the correlation is -1, the quartiles say so, and the first
    token (the same start state for every episode) carries no information about the return."""
    from types import SimpleNamespace

    import goals
    import numpy as np

    critic = SimpleNamespace(small=-1.0, large=2.0, goal_tokens=lambda obs: obs[:, 0])
    episodes = [SimpleNamespace(observations=np.array([[0.5], [1.0 - k / 10], [1.0 - k / 10]]),
                                rewards=np.full(3, float(k))) for k in range(8)]
    s = goals.value_goal_stats(critic, SimpleNamespace(episodes=episodes))
    assert s["episodes"] == 8 and (s["v_small"], s["v_large"]) == (-1.0, 2.0)
    assert s["corr_mean_token_return"] == -1.0 and s["first_token_percentiles"]["50"] == 0.5
    assert s["corr_first_token_return"] is None  # every episode starts at the same token: r is undefined
    assert s["bottom_quartile"]["episodes"] == 2 and s["bottom_quartile"]["return"] == 1.5
    assert s["top_quartile"]["mean_token"] < s["bottom_quartile"]["mean_token"]
