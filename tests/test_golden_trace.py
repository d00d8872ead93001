"""Golden trace: 20 training steps of each model on fixed tiny data must reproduce the stored losses to 1e-6.

Any change to training math (model, init, loss, sampler, optimiser, schedule, dropout) fails here on
purpose. If the change is intended, regenerate the trace and say why (the reason is stored with it):

    .venv/bin/python tests/test_golden_trace.py --update --reason "what changed and why"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pytest

TRACE = Path(__file__).with_name("golden") / "trace.json"
MODELS = {  # tiny sizes of every model (model_options); each keeps its own init, dropout and the default DTd switches
    "dtd": dict(hidden_size=16, n_layer=2, ff_dim=32, join_ff_dim=32),
    "dt-small": dict(hidden_size=16, n_layer=2),
    "dt-large": dict(hidden_size=16, n_layer=2, n_head=4),
    "bc": dict(hidden_size=16),
}


def losses(model: str, out_dir: Path) -> list[float]:
    """The per-step training losses of a 20-step run on the embedded dataset (1 thread, seed 0)."""
    from dtd.config import TrainConfig
    from dtd.training.trainer import train

    cfg = TrainConfig(model=model, steps=20, batch_size=8, context_len=4, lr=1e-3, warmup_steps=5, log_every=1,
                      eval_episodes=0, eval_untrained=False, ckpt_every=0, max_minutes=0, threads=1, seed=0,
                      out_dir=str(out_dir), run_name=model, model_options=MODELS[model])
    import torch

    threads = torch.get_num_threads()
    try:
        run = train(cfg, progress=False).run_dir
    finally:
        torch.set_num_threads(threads)  # train() set 1 thread for this process
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "loss" in r]


@pytest.mark.parametrize("model", list(MODELS))
def test_training_losses_match_the_golden_trace(model, tmp_path):
    stored = json.loads(TRACE.read_text())
    got = losses(model, tmp_path)
    assert len(got) == 20
    assert got == pytest.approx(stored["losses"][model], abs=1e-6, rel=0), (
        f"training math changed for {model}; if intended, regenerate the trace with a reason (module docstring)")


def main() -> int:
    import tempfile

    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help="rewrite tests/golden/trace.json")
    parser.add_argument("--reason", default="", help="why the training math changed (required with --update)")
    args = parser.parse_args()
    if not (args.update and args.reason.strip()):
        parser.error("--update --reason TEXT is required")
    with tempfile.TemporaryDirectory() as tmp:
        trace = {m: losses(m, Path(tmp)) for m in MODELS}
    old = json.loads(TRACE.read_text()) if TRACE.is_file() else {"history": []}
    history = old.get("history", []) + [{"date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
                                         "reason": args.reason.strip()}]
    TRACE.parent.mkdir(exist_ok=True)
    tmp_path = TRACE.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps({"losses": trace, "history": history}, indent=1) + "\n")
    tmp_path.replace(TRACE)
    print(f"wrote {TRACE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
