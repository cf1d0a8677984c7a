"""Is this image like the training images? A per-image novelty (out-of-distribution) score.

A classifier trained on one lab's images gives confident but wrong answers on another lab's
stain (docs/cross_lab.md). The differential count should say when its input does not look
like what the model learned from. This module compares a handful of hand-crafted features
that describe the *stain and scale* of a cell rather than its class -- mean CIE L*a*b* colour
of nucleus and cytoplasm, and the cell's area -- with their distribution **within each
class** of the training images:

``d_c(x) = sqrt(mean_j ((x_j - median_cj) / scale_cj)^2)``, ``score(x) = min_c d_c(x)``

with ``median_cj`` and ``scale_cj = IQR_cj / 1.349`` (a robust standard deviation) of
feature ``j`` over the training images of class ``c`` (cell area on a log scale). A cell of
any training class from the training lab is close to its own class; a cell from another
stain is far from every class. The threshold is the 99th percentile of the training images'
own scores, so about 1% of images like the training ones are flagged.

Stored in the model file's metadata by ``morphocell train`` (hand-crafted, deep and fused
models) under the key ``"domain_reference"``; ``morphocell predict`` writes the columns
``domain_score`` and ``unlike_training`` and says how many cells are flagged, with a warning
above 5%. The key and the column names are file formats that other tools read, so they keep
their names.

It is a signal about a *batch* of images, not a per-cell error detector: within a dataset,
flagged and unflagged cells are classified about equally well. The reference is always fitted
on the training images themselves, never on their stain-augmented copies
(``--domain-copies``), which would widen it until another lab's cells stand out no more than
the training lab's (measurements on PBC, segwbc and BCCD crops:
docs/experiments/2026-11-30-novelty-reference.md).
"""
from __future__ import annotations

import numpy as np

__all__ = ["NOVELTY_FEATURES", "fit_novelty_reference", "novelty_scores"]

#: Features compared (stain: L*a*b* means of nucleus and cytoplasm; scale: cell area).
NOVELTY_FEATURES = ("Nucleus_Color_Mean_LabL", "Nucleus_Color_Mean_LabA",
                   "Nucleus_Color_Mean_LabB", "Cytoplasm_Color_Mean_LabL",
                   "Cytoplasm_Color_Mean_LabA", "Cytoplasm_Color_Mean_LabB", "Cell_Shape_Area")
_LOG = ("Cell_Shape_Area",)
QUANTILE = 0.99


def _matrix(X, names) -> np.ndarray:
    import pandas as pd

    df = pd.DataFrame(X)
    M = df[list(names)].to_numpy(dtype=np.float64, copy=True)
    for j, n in enumerate(names):
        if n in _LOG:
            M[:, j] = np.log(np.maximum(M[:, j], 1.0))
    return M


def _distances(M: np.ndarray, median: np.ndarray, scale: np.ndarray) -> np.ndarray:
    import warnings

    z = (M[:, None, :] - median[None]) / scale[None]  # (n, classes, features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, on purpose
        return np.sqrt(np.nanmean(z ** 2, axis=2)).min(axis=1)


def fit_novelty_reference(X, y, quantile: float = QUANTILE) -> dict | None:
    """Per-class medians and robust scales of :data:`NOVELTY_FEATURES` over training rows
    ``X`` (a DataFrame with those columns) with labels ``y``, and the score threshold.
    ``None`` when ``X`` lacks a feature (e.g. a model without the colour family)."""
    import pandas as pd

    X = pd.DataFrame(X).reset_index(drop=True)
    if any(n not in X.columns for n in NOVELTY_FEATURES):
        return None
    M = _matrix(X, NOVELTY_FEATURES)
    y = np.asarray(y).astype(str)
    classes = sorted(set(y))
    med, sc = [], []
    for c in classes:
        Mc = M[y == c]
        q25, q50, q75 = np.nanpercentile(Mc, [25, 50, 75], axis=0)
        spread = np.nanstd(Mc, axis=0)
        # a robust sd; floored so that a near-constant feature of a small class cannot make
        # every other image infinitely far
        s = np.maximum((q75 - q25) / 1.349, np.maximum(0.1 * spread, 1e-6))
        med.append(q50)
        sc.append(s)
    med, sc = np.asarray(med), np.asarray(sc)
    own = _distances(M, med, sc)
    return {"features": list(NOVELTY_FEATURES), "log_features": list(_LOG),
            "classes": classes, "median": med.tolist(), "scale": sc.tolist(),
            "quantile": float(quantile),
            "threshold": float(np.nanquantile(own, quantile))}


def novelty_scores(reference: dict, X) -> tuple[np.ndarray, np.ndarray]:
    """``(score, unlike_training)`` per row of ``X`` (NaN / False where features are NaN)."""
    M = _matrix(X, reference["features"])
    s = _distances(M, np.asarray(reference["median"]), np.asarray(reference["scale"]))
    return s, np.nan_to_num(s, nan=-np.inf) > float(reference["threshold"])

