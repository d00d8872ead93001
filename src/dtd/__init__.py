"""dtd: Decision Transducer and its baselines for offline reinforcement learning.

Data flows one way: ``dtd.data`` -> ``dtd.models`` -> ``dtd.training`` -> ``dtd.evaluation``
-> ``dtd.analysis``. The CLI (``dtd.cli``) only parses arguments and calls these.
"""

from dtd.errors import DtdError

__version__ = "0.1.0"
__all__ = ["DtdError", "__version__"]
