"""Shape features of nucleus, cytoplasm and cell (rotation-invariant only)."""
from __future__ import annotations

import numpy as np

from .base import Crop
from .registry import REGIONS, FeatureSpec

__all__ = ["specs", "compute"]


def specs() -> list[FeatureSpec]:
    out = []
    for r in REGIONS:
        out.append(FeatureSpec(f"{r}_Shape_Area", "shape", r, "px2",
                               f"number of {r.lower()} pixels", "A = sum(mask)",
                               "skimage regionprops area"))
    return out


def compute(crop: Crop) -> dict[str, float]:
    out = {}
    for r in REGIONS:
        m = crop.mask(r)
        a = float(np.count_nonzero(m))
        out[f"{r}_Shape_Area"] = a if a > 0 else np.nan
    return out
