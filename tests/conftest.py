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
