"""Hand-crafted features: shape, colour and texture families, exact and numba-fast.

See :mod:`morphocell.features.registry` for every name, unit and formula.
"""
from __future__ import annotations

from . import registry
from .extractor import (DEFAULT_FAMILIES, FeatureExtractor, extract_batch, extract_features,
                        feature_names)

__all__ = ["registry", "FeatureExtractor", "extract_features", "extract_batch", "feature_names",
           "DEFAULT_FAMILIES"]
