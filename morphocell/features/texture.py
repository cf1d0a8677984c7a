"""Texture features of nucleus, cytoplasm and cell."""
from __future__ import annotations

import numpy as np

from .base import Crop
from .registry import REGIONS, FeatureSpec

__all__ = ["specs", "compute"]


def specs() -> list[FeatureSpec]:
    return [FeatureSpec(f"{r}_Texture_StdGray", "texture", r, "intensity",
                        f"standard deviation of grey level over the {r.lower()}",
                        "std(gray[mask]), population (ddof=0)") for r in REGIONS]


def compute(crop: Crop) -> dict[str, float]:
    return {f"{r}_Texture_StdGray": (float(crop.gray[crop.mask(r)].std())
                                     if crop.mask(r).any() else np.nan) for r in REGIONS}
