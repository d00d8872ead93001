"""dtd bench on a tiny setting: it runs end to end and writes valid JSON with the expected keys.
No timing assertion: the figures depend on the machine and its load."""

import json

import pytest
import torch

from dtd.bench import BenchConfig, PeakRSS, _category, run_bench, write_json
from dtd.cli import main


@pytest.fixture(scope="module")
def tiny_result():
    cfg = BenchConfig.tiny_config(presets=["dtd", "dt-small"], batch_sizes=[3], episodes=2, eval_max_steps=5,
                                  variants=["bf16"])  # fmt: skip
    return run_bench(cfg, progress=False)


def test_result_has_every_section(tiny_result):
    r = tiny_result
    assert {"config", "machine", "matmul", "train", "profile", "sampler", "inference", "eval", "memory"} <= set(r)
    assert {"cpu", "cores", "torch", "threads", "git_commit", "date"} <= set(r["machine"])
    assert [(t["preset"], t["batch_size"]) for t in r["train"]] == [("dtd", 3), ("dt-small", 3)]
    for t in r["train"]:
        assert t["params"] > 0 and t["flops_per_step"] > 0
        for path in ("fast", "reference"):
            assert t[path]["samples_per_s"] > 0 and t[path]["memory"]["peak_mb"] > 0
        assert t["speedup_vs_reference"] > 0
        bf16 = t["variants"]["bf16"]  # the step under bf16 autocast (a GPU run adds compile, CUDA graphs)
        assert bf16["bf16"] is True and bf16["compile_mode"] is None and bf16["samples_per_s"] > 0
    assert set(r["profile"]["phases_ms"]) == {"sample", "to_tensor", "forward", "backward", "clip", "optimizer"}
    assert r["profile"]["op_categories_ms"]["matmul"] > 0
    assert {"n1", "n2"} <= set(r["inference"])
    for n, envs in (("n1", 1), ("n2", 2)):
        row = r["eval"][n]
        assert row["batched"]["env_steps"] > 0 and row["reference"]["env_steps"] > 0
        assert len(row["batched"]["returns"]) == envs == len(row["reference"]["returns"])
        # the two paths run the same seeds: same episodes up to float rounding of the batched call
        assert row["returns_max_abs_diff"] < 1e-3
        assert row["env_only"]["env_steps_per_s"] > 0
    workers = r["eval"]["n2"]["workers"]  # the episodes split over 2 processes: the same episodes
    assert workers["workers"] == 2 and len(workers["returns"]) == 2
    assert r["eval"]["n2"]["workers_returns_max_abs_diff"] < 1e-3  # tiny windows (K 5): not bit-exact
    assert "workers" not in r["eval"]["n1"] and "async" not in r["eval"]["n1"]
    assert r["eval"]["n2"]["async_returns_max_abs_diff"] < 1e-3  # the same loop over an async vector env
    assert r["memory"]["train_peak_mb"] > 0 and r["memory"]["eval_peak_mb"] > 0


def test_json_roundtrip(tiny_result, tmp_path):
    path = write_json(tiny_result, tmp_path / "sub" / "bench.json")
    assert json.loads(path.read_text())["train"][0]["preset"] == "dtd"
    assert not list(path.parent.glob("*.tmp"))


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    rc = main(["bench", "--tiny", "--presets", "bc", "--batch-sizes", "2", "--episodes", "2", "--no-naive",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["config"]["presets"] == ["bc"] and data["config"]["naive"] is False
    assert "reference" not in data["train"][0] and "speedup_n_vs_one_at_a_time" not in data["eval"]
    printed = capsys.readouterr().out
    assert "wrote" in printed and "2 worker processes" in printed and "async vector env" in printed


def test_cli_rejects_bad_settings(tmp_path, capsys):
    assert main(["bench", "--tiny", "--steps", "0", "--out", str(tmp_path / "x.json")]) == 2
    assert "bench:" in capsys.readouterr().err
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

    cfg = BenchConfig.tiny_config(episodes=2, eval_max_steps=6, run=str(tiny_runs["dtd"]))
    ev = bench_eval(cfg)
    assert ev["preset"] == "dtd" and ev["run"] == str(tiny_runs["dtd"])
    row = ev["n2"]
    assert len(row["batched"]["returns"]) == 2 and row["batched"]["mean_length"] > 0
    assert row["returns_max_abs_diff"] < 1e-3


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
