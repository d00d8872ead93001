"""Export a trained run's inference function to TorchScript or ONNX, to run without the training stack.

The exported function is self-contained: it takes RAW observations and return-to-go (reward units),
applies the run's state normalisation and reward scale inside, and returns the action at the last
valid position of each fixed-size window:

    action = f(observations (N,K,S) float32, actions (N,K,A) float32, goals (N,K,G) float32,
               timesteps (N,K) int64, mask (N,K) float32)  -> (N,A) float32

Windows are right-padded (mask 1 on the valid prefix, at least one valid step); the action slot at
the last valid position is ignored. N is free, K is the run's context length. The run's facts
(dims, K, reward scale, goal kind, input names) travel inside the file: TorchScript extra file
``dtd.json``, ONNX metadata property ``dtd``. The model code is not changed: the wrapper only
normalises, calls ``forward`` and picks the position.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dtd.errors import DtdError
from dtd.paths import check_output_file, write_atomic
from dtd.runs import is_checkpoint_file, load_run

FORMATS = ("torchscript", "onnx")
INPUT_NAMES = ["observations", "actions", "goals", "timesteps", "mask"]
ONNX_OPSET = 17


def inference_module(model: Any, state_mean: np.ndarray, state_std: np.ndarray, goal_scale: float = 1.0):
    """The model wrapped with its normalisation: RAW inputs -> action at the last valid position."""
    import torch
    from torch import nn

    class Inference(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model.eval()
            self.register_buffer("state_mean", torch.as_tensor(np.asarray(state_mean, np.float32).reshape(-1)))
            self.register_buffer("state_std", torch.as_tensor(np.asarray(state_std, np.float32).reshape(-1)))
            self.goal_scale = float(goal_scale)

        def forward(self, observations, actions, goals, timesteps, mask):
            # observations (N,K,S), actions (N,K,A), goals (N,K,G), timesteps (N,K), mask (N,K) -> (N,A)
            states = (observations - self.state_mean) / self.state_std * mask.unsqueeze(-1)
            out = self.model(states, actions, goals / self.goal_scale, timesteps, mask).actions  # (N,K,A)
            last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # (N,)
            index = last.view(-1, 1, 1).expand(-1, 1, out.shape[-1])  # (N,1,A)
            return out.gather(1, index).squeeze(1)

    return Inference().eval()


def example_inputs(obs_dim: int, act_dim: int, goal_dim: int, context_len: int, n: int = 2, seed: int = 0):
    """Random valid inputs of the exported signature (window i has i+1 valid steps, at most K)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    k = context_len
    lengths = torch.arange(n) % k + 1
    mask = (torch.arange(k)[None] < lengths[:, None]).float()
    return (torch.randn(n, k, obs_dim, generator=g), torch.rand(n, k, act_dim, generator=g) * 2 - 1,
            torch.rand(n, k, goal_dim, generator=g) * 1000, torch.arange(k).repeat(n, 1), mask)


def export_model(model: Any, meta: dict[str, Any], state_mean: np.ndarray, state_std: np.ndarray,
                 fmt: str, out: str | Path) -> Path:
    """Write the inference function of ``model`` to ``out`` (atomic); meta needs obs/act/goal dims and K."""
    import torch

    out = check_export_target(fmt, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = inference_module(model.cpu(), state_mean, state_std, meta.get("goal_scale", 1.0))
    inputs = example_inputs(meta["obs_dim"], meta["act_dim"], meta["goal_dim"], meta["context_len"])
    meta = {**meta, "inputs": INPUT_NAMES, "output": "action", "format": fmt}

    def write(tmp: Path) -> None:
        with torch.no_grad():
            if fmt == "torchscript":
                traced = torch.jit.trace(module, inputs, check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={"dtd.json": json.dumps(meta)})
            else:
                _export_onnx(module, inputs, tmp, meta)

    return write_atomic(out, write)  # a per-process temporary name: concurrent exports to one path do not clash


def check_export_target(fmt: str, out: str | Path) -> Path:
    """The output file of an export, checked before any work: a known format, a file name whose suffix
    load_exported will read back as that format, in a writable folder."""
    if fmt not in FORMATS:
        raise DtdError(f"export: format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    out = check_output_file(out, "export --out")  # never inside a run's checkpoints/ folder
    if (out.suffix.lower() == ".onnx") != (fmt == "onnx"):
        want = "ending in .onnx" if fmt == "onnx" else "not ending in .onnx (e.g. policy.pt)"
        raise DtdError(f"export --out {out}: a {fmt} file needs a name {want}")
    if is_checkpoint_file(out):
        raise DtdError(f"export --out {out}: is a dtd checkpoint (a run's weights), which the export would replace; "
                       "choose another file")
    return out


def _export_onnx(module: Any, inputs: tuple, path: Path, meta: dict[str, Any]) -> None:
    import warnings

    import onnx
    import torch

    batch = {name: {0: "batch"} for name in INPUT_NAMES + ["action"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript-based exporter: needs no onnxscript and handles SDPA at opset >= 14
        torch.onnx.export(module, inputs, str(path), input_names=INPUT_NAMES, output_names=["action"],
                          dynamic_axes=batch, opset_version=ONNX_OPSET, dynamo=False)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "dtd", json.dumps(meta)
    onnx.save(proto, str(path))


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """``dtd export``: a run's last checkpoint to one TorchScript or ONNX file."""
    check_export_target(fmt, out)
    model, info = load_run(run_dir)
    meta = {
        "run": str(run_dir), "model_name": info.model_name, "env_id": info.env_id, "obs_dim": info.obs_dim,
        "act_dim": info.act_dim, "goal_dim": info.goal_dim, "context_len": info.context_len,
        "max_ep_len": info.max_ep_len, "goal": info.goal, "reward_scale": info.reward_scale,
        # return-to-go is given in reward units and scaled inside; other goals go in as the model saw them
        "goal_scale": info.reward_scale if info.goal == "rtg" else 1.0,
    }
    return export_model(model, meta, info.state_mean, info.state_std, fmt, out)


def load_exported(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(callable on numpy arrays -> (N,A) numpy, meta) for an exported file of either format."""
    path = Path(path)
    if not path.is_file():
        raise DtdError(f"{path}: no such exported policy file")
    if path.suffix == ".onnx":
        import onnx
        import onnxruntime as ort

        meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}.get("dtd", "{}"))
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]  # unused inputs may be dropped by the exporter
        return (lambda *xs: sess.run(None, {n: x for n, x in zip(INPUT_NAMES, xs) if n in names})[0]), meta
    import torch

    extra = {"dtd.json": ""}
    fn = torch.jit.load(str(path), _extra_files=extra)

    def run(*xs):
        with torch.no_grad():
            return fn(*[torch.as_tensor(x) for x in xs]).numpy()

    return run, json.loads(extra["dtd.json"] or "{}")
