"""Overlap metrics between a predicted and a reference mask."""
from __future__ import annotations

import numpy as np

from .masks import CellMasks

__all__ = ["dice", "iou", "region_scores"]


def _pair(pred, ref):
    p = np.asarray(pred, dtype=bool)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {r.shape}")
    return p, r


def dice(pred, ref) -> float:
    """Dice coefficient ``2|P∩R| / (|P| + |R|)``; 1.0 when both masks are empty."""
    p, r = _pair(pred, ref)
    s = int(p.sum()) + int(r.sum())
    return 1.0 if s == 0 else 2.0 * int((p & r).sum()) / s


def iou(pred, ref) -> float:
    """Intersection over union ``|P∩R| / |P∪R|``; 1.0 when both masks are empty."""
    p, r = _pair(pred, ref)
    u = int((p | r).sum())
    return 1.0 if u == 0 else int((p & r).sum()) / u


def region_scores(pred: CellMasks, ref: CellMasks) -> dict[str, float]:
    """Dice and IoU for nucleus, cytoplasm and whole cell."""
    out = {}
    for region in ("nucleus", "cytoplasm", "cell"):
        a, b = getattr(pred, region), getattr(ref, region)
        out[f"{region}_dice"] = dice(a, b)
        out[f"{region}_iou"] = iou(a, b)
    return out
