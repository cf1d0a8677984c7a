"""Colour features of nucleus, cytoplasm and cell."""
from __future__ import annotations

import numpy as np

from .base import Crop
from .registry import REGIONS, FeatureSpec

__all__ = ["specs", "compute"]

_CH = ("R", "G", "B")


def specs() -> list[FeatureSpec]:
    return [FeatureSpec(f"{r}_Color_Mean_{c}", "color", r, "intensity",
                        f"mean {c} (0..255) over the {r.lower()}", "mean(I_c[mask])")
            for r in REGIONS for c in _CH]


def compute(crop: Crop) -> dict[str, float]:
    out = {}
    for r in REGIONS:
        m = crop.mask(r)
        for i, c in enumerate(_CH):
            out[f"{r}_Color_Mean_{c}"] = float(crop.image[..., i][m].mean()) if m.any() else np.nan
    return out
