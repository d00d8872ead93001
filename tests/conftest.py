import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared exists on developer machines and in CI only; tests that need it skip elsewhere."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def shared_datasets(shared_dir: Path) -> Path:
    path = shared_dir / "datasets"
    if not (path / "zoo").is_dir():
        pytest.skip("../shared/datasets is not present")
    return path


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """Run folders of a tiny DT and DTd (K=4, H=16) trained 3 steps on the embedded dataset, shared by the
    attention, export and Policy tests: real checkpoints through the training API, in seconds."""
    from dtd.config import TrainConfig
    from dtd.training.trainer import train

    root = tmp_path_factory.mktemp("tiny_runs")
    small = dict(steps=3, batch_size=8, context_len=4, eval_episodes=0, eval_untrained=False, log_every=0,
                 ckpt_every=0, out_dir=str(root))
    tiny = dict(hidden_size=16, n_layer=1)
    return {
        "dt": train(TrainConfig(model="dt-small", run_name="dt", model_options=dict(tiny, n_head=2), **small),
                    progress=False).run_dir,
        "dtd": train(TrainConfig(model="dtd", run_name="dtd", model_options=dict(tiny, ff_dim=32, join_ff_dim=32),
                                 **small), progress=False).run_dir,
    }
