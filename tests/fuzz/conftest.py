"""Fuzz tests: bounded and derandomised for CI; GATELAB_FUZZ_EXAMPLES scales them for a long run."""

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile(
    "gatelab-fuzz",
    max_examples=int(os.environ.get("GATELAB_FUZZ_EXAMPLES", "200")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
