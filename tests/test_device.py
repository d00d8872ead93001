"""Issue #16: every --device path on a (mocked) GPU machine, on CPU CI.

torch.cuda is monkeypatched to report GPUs; Module.to / Tensor.to record the device the code asks
for and then stay on the CPU. The assertions: set_device always receives an index (never the
index-less "cuda" that used to crash every GPU machine), and the model and the batches are sent to
that same cuda:N.
"""

from __future__ import annotations

import pytest
import torch

from dtd.cli import main
from dtd.device import resolve_device
from dtd.errors import DtdError


@pytest.fixture(autouse=True)
def keep_threads():
    """Runs here may set torch's thread count (--threads); the tests after them must not inherit it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class FakeGPU:
    """torch.cuda as on a machine with `count` GPUs, `current` the current one."""

    def __init__(self, monkeypatch, count: int = 2, current: int = 0):
        self.set_device_calls: list = []
        self.to_calls: list[str] = []
        self.current = current
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "set_device", self._set_device)
        module_to, tensor_to = torch.nn.Module.to, torch.Tensor.to

        def fake_module_to(mod, *args, **kwargs):
            args, kwargs = self._strip(args, kwargs)
            return module_to(mod, *args, **kwargs)

        def fake_tensor_to(t, *args, **kwargs):
            args, kwargs = self._strip(args, kwargs)
            return tensor_to(t, *args, **kwargs)

        monkeypatch.setattr(torch.nn.Module, "to", fake_module_to)
        monkeypatch.setattr(torch.Tensor, "to", fake_tensor_to)

    def _set_device(self, device) -> None:
        self.set_device_calls.append(device)
        if isinstance(device, torch.device):
            if device.index is None:
                raise ValueError("Expected a cuda device with a specified index")  # what torch does
            device = device.index
        elif isinstance(device, str):
            device = torch.device(device).index
            if device is None:
                raise ValueError("Expected a cuda device with a specified index")
        self.current = int(device)

    def _strip(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """Record a cuda device request and replace it by the CPU."""

        def swap(d):
            if isinstance(d, (str, torch.device)) and str(d).startswith("cuda"):
                self.to_calls.append(str(d))
                return "cpu"
            return d

        args = tuple(swap(a) for a in args)
        if "device" in kwargs:
            kwargs = dict(kwargs, device=swap(kwargs["device"]))
        return args, kwargs

    def assert_indexed(self) -> None:
        assert self.set_device_calls, "set_device was never called"
        for d in self.set_device_calls:
            assert isinstance(d, int) or (isinstance(d, str) and d.startswith("cuda:")), d


def test_resolve_device_strings(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    for bad in ("tpu", "gpu", "cuda:x", "cpu:0", "", "cuda:-1", "mps:0"):
        with pytest.raises(DtdError, match="unknown device"):
            resolve_device(bad)
    for spec in ("cuda", "cuda:0", "CUDA:1"):
        with pytest.raises(DtdError, match="CUDA is not available"):
            resolve_device(spec)
    gpu = FakeGPU(monkeypatch, count=2, current=1)
    assert resolve_device("auto") == "cuda:1"  # torch's current device
    assert resolve_device("cuda") == "cuda:1"
    assert resolve_device("cuda", local_rank=0) == "cuda:0"  # a DDP rank takes its LOCAL_RANK
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(DtdError, match="no CUDA device 2"):
        resolve_device("cuda:2")
    assert gpu.set_device_calls == []  # resolving alone changes nothing


@pytest.mark.parametrize("spec, want", [("auto", "cuda:0"), ("cuda", "cuda:0"), ("cuda:1", "cuda:1")])
def test_train_on_a_mocked_gpu(spec, want, monkeypatch, tmp_path):
    from dtd.config import TrainConfig
    from dtd.training.trainer import train

    gpu = FakeGPU(monkeypatch, count=2, current=0)
    cfg = TrainConfig(model="dt-small", model_options=dict(hidden_size=16, n_layer=1, n_head=2), context_len=4,
                      batch_size=8, steps=3,
                      eval_episodes=0, eval_untrained=False, log_every=0, ckpt_every=0, device=spec,
                      out_dir=str(tmp_path), run_name="gpu", threads=1)
    result = train(cfg, progress=False)
    gpu.assert_indexed()
    assert gpu.set_device_calls == [int(want.split(":")[1])]
    # the model and every training batch (states, actions, goals, timesteps, mask) went to that GPU
    assert want in gpu.to_calls and set(gpu.to_calls) == {want}
    assert gpu.to_calls.count(want) >= 1 + 3 * 5
    assert result.step == 3 and (tmp_path / "gpu" / "checkpoints" / "last.pt").is_file()


def test_ddp_rank_takes_its_local_rank(monkeypatch):
    from dtd.training import ddp

    gpu = FakeGPU(monkeypatch, count=2, current=0)
    assert ddp.rank_device("cuda", ddp.Dist(rank=1, world_size=2, local_rank=1)) == "cuda:1"
    gpu.current = 0
    assert ddp.rank_device("auto", ddp.Dist()) == "cuda:0"  # one process: torch's current device
    assert gpu.set_device_calls == [1, 0]


def test_eval_attention_bench_iql_on_a_mocked_gpu(tiny_runs, monkeypatch, tmp_path, capsys):
    import dtd.bench
    import dtd.evaluation as evaluation

    gpu = FakeGPU(monkeypatch, count=1, current=0)
    seen = {}

    def fake_evaluate_run(model, info, device, **kw):  # the rollout itself needs a real GPU
        seen["eval"] = (device, next(model.parameters()).device.type)
        return {"env_id": "Hopper-v5", "episodes": 1, "seed": 0, "targets": {}}

    monkeypatch.setattr(evaluation, "evaluate_run", fake_evaluate_run)
    run = tmp_path / "run"
    import shutil

    shutil.copytree(tiny_runs["dt"], run)
    assert main(["eval", str(run), "--device", "cuda"]) == 0
    assert seen["eval"][0] == "cuda:0" and "cuda:0" in gpu.to_calls

    gpu.to_calls.clear()
    assert main(["attention", str(run), "--windows", "3", "--device", "cuda", "--out", str(tmp_path / "att")]) == 0
    assert "cuda:0" in gpu.to_calls and set(gpu.to_calls) == {"cuda:0"}

    def fake_run_bench(cfg, progress=True):
        seen["bench"] = cfg.device
        raise DtdError("stop here")

    monkeypatch.setattr(dtd.bench, "run_bench", fake_run_bench)
    assert main(["bench", "--tiny", "--device", "auto", "--out", str(tmp_path / "b.json")]) == 2
    assert seen["bench"] == "cuda:0"

    gpu.to_calls.clear()
    gpu.set_device_calls.clear()
    assert main(["iql", "train", "embedded:hopper", "--steps", "2", "--batch-size", "8", "--hidden", "8",
                 "--log-every", "0", "--ckpt-every", "0", "--device", "cuda", "--out-dir", str(tmp_path),
                 "--run-name", "iql"]) == 0
    gpu.assert_indexed()
    assert "cuda:0" in gpu.to_calls and set(gpu.to_calls) == {"cuda:0"}
    capsys.readouterr()
