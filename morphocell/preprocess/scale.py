"""Pixel scale: red-cell diameter as a ruler, and resampling to a target diameter."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._common import StainNormalizationError, _check_image
from .stain import _od, background_rgb


def estimate_rbc_diameter(image: np.ndarray, cell: np.ndarray | None = None,
                          min_frac: float = 0.04, max_frac: float = 0.3) -> float:
    """Median red-cell diameter (px) in one image, or NaN where no red cell is found.

    Circles are found by OpenCV's gradient Hough transform (``HOUGH_GRADIENT_ALT``) on the
    stain image (sum of the three optical densities relative to the background, scaled to
    0..255, Gaussian sigma 1); radii from ``min_frac`` to ``max_frac`` of the shorter image
    side; circles whose centre lies on ``cell`` (the white cell's mask, optional) are
    ignored. The search range is relative to the image, so no size is assumed in pixels.
    """
    import cv2

    img = _check_image(image)
    h, w = img.shape[:2]
    od = _od(img, background_rgb(img)).sum(axis=2)
    top = od.max()
    if top <= 0:
        return float("nan")
    g = cv2.GaussianBlur((od / top * 255.0).astype(np.float32), (0, 0), 1.0)
    g = np.clip(g, 0, 255).astype(np.uint8)
    side = min(h, w)
    circles = cv2.HoughCircles(g, cv2.HOUGH_GRADIENT_ALT, 1.5, side * 0.05, param1=100,
                               param2=0.6, minRadius=max(2, int(side * min_frac)),
                               maxRadius=max(3, int(side * max_frac)))
    if circles is None:
        return float("nan")
    c = circles[0]
    if cell is not None:
        m = np.asarray(cell, bool)
        if m.shape != (h, w):
            raise StainNormalizationError(f"cell mask of shape {m.shape} does not match image "
                                          f"{(h, w)}")
        yy = np.clip(np.rint(c[:, 1]).astype(int), 0, h - 1)
        xx = np.clip(np.rint(c[:, 0]).astype(int), 0, w - 1)
        c = c[~m[yy, xx]]
    if c.shape[0] == 0:
        return float("nan")
    return float(2.0 * np.median(c[:, 2]))


def fit_rbc_target(diameters: Iterable[float]) -> float:
    """Median of the finite per-image red-cell diameters of the training images."""
    d = np.asarray(list(diameters), np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise StainNormalizationError("no red-cell diameter to fit the scale target on")
    return float(np.median(d))


def normalize_scale(image: np.ndarray, diameter: float, target: float,
                    limits: tuple[float, float] = (0.5, 2.0)) -> tuple[np.ndarray, float]:
    """Resize ``image`` by ``target / diameter`` (clipped to ``limits``) so that its red cells
    get the training images' diameter; a NaN ``diameter`` leaves it as is (factor 1).

    Returns ``(image, factor)``. Enlarging uses bicubic, shrinking area interpolation.
    """
    import cv2

    img = _check_image(image)
    if not (np.isfinite(target) and target > 0):
        raise StainNormalizationError(f"target diameter must be a positive number, got {target}")
    if not (np.isfinite(diameter) and diameter > 0):
        return img, 1.0
    f = float(np.clip(target / diameter, *limits))
    if abs(f - 1.0) < 1e-3:
        return img, 1.0
    h, w = img.shape[:2]
    size = (max(2, round(w * f)), max(2, round(h * f)))
    interp = cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA
    return cv2.resize(img, size, interpolation=interp), f


# -- domain randomisation (training images) -------------------------------------------------


def size_scale_factor(target_area: float, reference_area: float) -> float:
    """Linear pixel-scale factor of a lab against a reference from a typical cell area in
    each (px2; e.g. the class-balanced location of ``Cell_Shape_Area`` of
    :func:`morphocell.adapt.balanced_stats`): ``f = sqrt(target_area / reference_area)``.
    ``f > 1``: the lab's cells are ``f`` times wider in pixels (finer pixels); resizing its
    images by ``1 / f`` brings them to the reference. NaN when either area is not positive.
    """
    t, r = float(target_area), float(reference_area)
    if not (np.isfinite(t) and np.isfinite(r) and t > 0 and r > 0):
        return float("nan")
    return float(np.sqrt(t / r))


def batch_scale_factor(areas, reference_areas, quantiles=(0.25, 0.5, 0.75)) -> float:
    """Linear pixel-scale factor of a batch of cells against reference cells of the same
    class mix, from their area distributions: the median over ``quantiles`` of
    ``sqrt(q_batch / q_reference)``. Areas scale with the square of the pixel size whatever
    the cell, so matching quantiles of two samples of the same population recovers the
    resampling factor (:func:`size_scale_factor` for one pair of areas). Non-finite or
    non-positive areas are ignored; NaN when either side has none.
    """
    a = np.asarray(areas, np.float64)
    b = np.asarray(reference_areas, np.float64)
    a = a[np.isfinite(a) & (a > 0)]
    b = b[np.isfinite(b) & (b > 0)]
    if a.size == 0 or b.size == 0:
        return float("nan")
    qa, qb = np.quantile(a, quantiles), np.quantile(b, quantiles)
    return float(np.median(np.sqrt(qa / qb)))


def resample(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` resized by ``factor`` (bicubic when enlarging, area when shrinking); the
    identity within 0.1 % of 1."""
    import cv2

    img = _check_image(image)
    f = float(factor)
    if not (np.isfinite(f) and f > 0):
        raise StainNormalizationError(f"resampling factor must be a positive number, got "
                                      f"{factor}")
    if abs(f - 1.0) < 1e-3:
        return img
    h, w = img.shape[:2]
    size = (max(2, round(w * f)), max(2, round(h * f)))
    return cv2.resize(img, size, interpolation=cv2.INTER_CUBIC if f > 1 else cv2.INTER_AREA)
