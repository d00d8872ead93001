"""dtd: Decision Transducer and its baselines for offline reinforcement learning.

Data flows one way: ``dtd.data`` -> ``dtd.models`` -> ``dtd.training`` -> ``dtd.evaluation``
-> ``dtd.analysis``. The CLI (``dtd.cli``) only parses arguments and calls these.
"""

from dtd.errors import DtdError

__version__ = "0.1.0"
__all__ = ["DtdError", "Policy", "__version__"]


def __getattr__(name: str):
    """``dtd.Policy`` is imported on first use, so ``import dtd`` stays light (no torch)."""
    if name == "Policy":
        from dtd.policy import Policy

        return Policy
    raise AttributeError(f"module 'dtd' has no attribute {name!r}")
