"""dtd bench on a tiny setting: it runs end to end and writes valid JSON with the expected keys.
No timing assertion: the figures depend on the machine and its load."""

import json

import pytest
import torch

from dtd.bench import BenchConfig, PeakRSS, _category, run_bench, write_json
from dtd.cli import main


# The returns-identical checks compare exactly. `act` is batch-invariant for evaluation's K = 20 at 1 and
# 2 threads (tests/test_models.py); with 2 threads the tiny settings' K = 5 windows (M = N x 5 rows) are
# too short for that, so these runs use one thread.


@pytest.fixture(autouse=True, scope="module")
def restore_threads():
    """run_bench sets torch's thread count for the process: put it back for the other test files."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_result(restore_threads):
    cfg = BenchConfig.tiny_config(presets=["dtd", "dt-small"], batch_sizes=[3], eval_episodes=[1, 2, 3],
                                  reference_episodes=2, eval_max_steps=5, variants=["bf16"], threads=1)  # fmt: skip
    return run_bench(cfg, progress=False)


def test_result_has_every_section(tiny_result):
    r = tiny_result
    assert {"config", "machine", "matmul", "train", "headline", "profile", "sampler", "inference", "eval",
            "memory"} <= set(r)  # fmt: skip
    assert {"cpu", "cores", "torch", "threads", "git_commit", "date"} <= set(r["machine"])
    assert [(t["preset"], t["batch_size"]) for t in r["train"]] == [("dtd", 3), ("dt-small", 3)]
    for t in r["train"]:
        assert t["params"] > 0 and t["flops_per_step"] > 0
        for path in ("fast", "reference"):
            assert t[path]["samples_per_s"] > 0 and t[path]["memory"]["peak_mb"] > 0
        assert t["speedup_vs_reference"] > 0
        assert "speedup_vs_authors" not in t  # no ratio against a constant: the authors' code is not timed here
        bf16 = t["variants"]["bf16"]  # the step under bf16 autocast (a GPU run adds compile, CUDA graphs)
        assert bf16["bf16"] is True and bf16["compile_mode"] is None and bf16["samples_per_s"] > 0
    assert set(r["profile"]["phases_ms"]) == {"sample", "to_tensor", "forward", "backward", "clip", "optimizer"}
    assert r["profile"]["op_categories_ms"]["matmul"] > 0
    assert list(r["profiles"]) == ["3"] and r["profiles"]["3"] is r["profile"]
    assert {"n1", "n2", "n3"} <= set(r["inference"]) and r["inference"]["flops_per_window"] > 0
    assert r["inference"]["n3"]["fraction_of_matmul_ceiling"] > 0
    assert "speedup_vs_authors" not in r["eval"] and "speedup_vs_authors" not in json.dumps(r)


def test_eval_curve(tiny_result):
    """One row per N; the reference runs 2 episodes once and each N's first min(N, 2) returns are checked."""
    ev = tiny_result["eval"]
    assert ev["episodes"] == [1, 2, 3] and ev["reference"]["episodes"] == 2
    assert len(ev["reference"]["returns"]) == 2
    for n in (1, 2, 3):
        row = ev[f"n{n}"]
        assert row["batched"]["episodes"] == n == len(row["batched"]["returns"]) and row["batched"]["env_steps"] > 0
        assert row["reference_checked"] == min(n, 2)
        # the same seeds: the same episodes (the untrained tiny model's returns, compared exactly)
        assert row["returns_identical"] is True and row["returns_max_abs_diff"] == 0
        assert row["env_only"]["env_steps_per_s"] > 0 and row["best_env_steps_per_s"] > 0
    assert ev["n2"]["workers"]["workers"] == 2 and len(ev["n3"]["workers"]["returns"]) == 3
    assert ev["n3"]["workers_returns_identical"] is True  # 3 episodes over 2 processes: the same episodes
    assert ev["n2"]["async_returns_identical"] is True  # the same loop over an async vector env
    assert "workers" not in ev["n1"] and "async" not in ev["n1"]
    assert ev["all_returns_identical"] is True
    head = tiny_result["headline"]
    assert set(head["train"]) == {"dtd_b3", "dt-small_b3"} and head["train"]["dtd_b3"]["fraction_of_matmul_ceiling"] > 0
    assert set(head["eval"]) == {"1", "2", "3"} and head["eval"]["3"]["reference_checked"] == 2
    assert head["eval"]["1"]["workers_env_steps_per_s"] is None and head["eval_all_returns_identical"] is True
    assert tiny_result["memory"]["train_peak_mb"] > 0 and tiny_result["memory"]["eval_peak_mb"] > 0


def test_json_roundtrip(tiny_result, tmp_path):
    path = write_json(tiny_result, tmp_path / "sub" / "bench.json")
    assert json.loads(path.read_text())["train"][0]["preset"] == "dtd"
    assert not list(path.parent.glob("*.tmp"))


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--tiny", "--presets", "bc", "--batch-sizes", "2", "--eval-episodes", "1,3",
               "--reference-episodes", "2", "--eval-workers", "2", "--threads", "1", "--no-progress", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["config"]["presets"] == ["bc"] and data["config"]["eval_episodes"] == [1, 3]
    assert data["eval"]["episodes"] == [1, 3] and data["eval"]["reference"]["episodes"] == 2
    assert data["eval"]["n3"]["reference_checked"] == 2 and data["eval"]["all_returns_identical"] is True
    assert "bc_b2" in data["headline"]["train"]
    printed = capsys.readouterr().out
    assert "wrote" in printed and "eval N=  3" in printed and "2 worker processes" in printed
    assert "async vector env" in printed and "returns identical to one at a time: True" in printed


def test_cli_no_naive(tmp_path):
    out = tmp_path / "b.json"
    rc = main(["bench", "--tiny", "--presets", "bc", "--batch-sizes", "2", "--eval-episodes", "2", "--eval-workers", "1",
               "--no-naive", "--threads", "1", "--no-progress", "--out", str(out)])  # fmt: skip
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["config"]["naive"] is False and "reference" not in data["train"][0]
    assert "reference" not in data["eval"] and "returns_identical" not in data["eval"]["n2"]
    assert "workers" not in data["eval"]["n2"] and data["eval"]["all_returns_identical"] is True  # async checked


def test_cli_rejects_bad_settings(tmp_path, capsys):
    assert main(["bench", "--tiny", "--steps", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "bench:" in capsys.readouterr().err
    assert main(["bench", "--tiny", "--eval-episodes", "0,10", "--out", str(tmp_path / "x.json")]) == 2
    assert "evaluation episodes" in capsys.readouterr().err
    assert main(["bench", "--tiny", "--reference-episodes", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "reference episodes" in capsys.readouterr().err
    assert main(["bench", "--tiny", "--variants", "bf16,fast", "--out", str(tmp_path / "x.json")]) == 2
    assert "unknown variant 'fast'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--tiny", "--device", "cuda", "--out", str(tmp_path / "x.json")]) == 2
        assert "not available" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_parse_variant():
    from dtd.bench.train import parse_variant

    assert parse_variant("fp32") == (False, None)
    assert parse_variant("compile+bf16") == (True, "default")
    assert parse_variant("cudagraphs") == (False, "reduce-overhead")


def test_profile_categories_and_peak_rss():
    assert _category("aten::native_layer_norm") == "layernorm"
    assert _category("aten::_scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert _category("aten::addmm") == "matmul"
    assert _category("aten::_foreach_lerp_") == "optimizer"
    with PeakRSS() as mem:
        block = bytearray(64 * 2**20)  # 64 MiB touched
        block[:: 4096] = b"x" * len(block[:: 4096])
    assert mem.result()["peak_mb"] >= mem.result()["start_mb"] + 32


def test_eval_of_a_trained_run(tiny_runs):
    """--run: evaluation uses the run's model and checkpoint settings; both paths give the same returns."""
    from dtd.bench import bench_eval

    cfg = BenchConfig.tiny_config(eval_episodes=[2], reference_episodes=1, eval_max_steps=6, run=str(tiny_runs["dtd"]))
    torch.set_num_threads(1)  # K = 4: see the note at the top
    ev = bench_eval(cfg)
    assert ev["preset"] == "dtd" and ev["run"] == str(tiny_runs["dtd"])
    row = ev["n2"]
    assert len(row["batched"]["returns"]) == 2 and row["batched"]["mean_length"] > 0
    assert row["reference_checked"] == 1 and row["returns_identical"] is True


def test_data_parallel_training_step():
    """--ddp: the batch is split over N gloo processes of 1 thread; the figure comes back from rank 0."""
    from dtd.bench import bench_train_ddp
    from dtd.errors import DtdError

    cfg = BenchConfig.tiny_config(presets=["dtd"])
    out = bench_train_ddp(cfg, "dtd", 4, 2)
    assert out["processes"] == 2 and out["batch_per_process"] == 2
    assert out["samples_per_s"] > 0 and out["ms_per_step"] > 0
    with pytest.raises(DtdError, match="does not split"):
        bench_train_ddp(cfg, "dtd", 5, 2)


def test_gpu_bench_script_flags_parse(tmp_path):
    """experiments/gpu_bench.sh only runs where a GPU is, so a renamed flag would break it unseen: run it with `dtd`
    replaced by a stand-in that parses each command line with dtd's own parser (exit 2 on an unknown flag)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    stand_in = tmp_path / "parse_only.py"
    stand_in.write_text("import sys\nfrom dtd.cli import build_parser\nbuild_parser().parse_args(sys.argv[1:])\n")
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), DTD=f"{sys.executable} {stand_in}")
    r = subprocess.run(["bash", str(root / "experiments" / "gpu_bench.sh")], env=env, capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)  # fmt: skip
    steps = [line for line in r.stdout.splitlines() if ": rc " in line]
    assert len(steps) == 6, r.stdout + r.stderr
    assert all(": rc 0 in" in line for line in steps), r.stdout + "".join(p.read_text() for p in out.glob("*.log"))
