"""gatelab: efficient and robust learning methods on PyTorch.

One subpackage per method (``gatelab.gates``, ...), plus the shared pieces:
``gatelab.data`` (data sets and where they live), ``gatelab.reproduce`` (paper
reproductions and their reports) and ``gatelab.cli`` (the ``gatelab`` command).
"""

__version__ = "0.1.0"
