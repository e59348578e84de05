"""The benchmark harness lives in the checkout's `benchmarks/` package, not in the
wheel: make it importable however pytest was started."""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
if str(CHECKOUT) not in sys.path:
    sys.path.insert(0, str(CHECKOUT))
