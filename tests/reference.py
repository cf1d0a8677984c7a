"""Slow, obviously-correct plain-numpy versions of morphocell's kernels, for tests only.

Each function says which morphocell function it checks. Keep them simple and readable:
loops are fine here; speed is not the point.
"""
from __future__ import annotations

import numpy as np  # noqa: F401

# ---- shape -------------------------------------------------------------------------------

# ---- color -------------------------------------------------------------------------------

# ---- texture -----------------------------------------------------------------------------
