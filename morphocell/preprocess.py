"""Unsupervised per-image normalisation for images from another lab: stain and scale.

Each function looks at one image only (no labels, no statistics of a test set); the
*target* it maps to (a stain appearance, a red-cell diameter) is estimated beforehand on the
training images (:func:`fit_reinhard_target`, :func:`fit_macenko_target`,
:func:`fit_rbc_target`).

**Reinhard** (Reinhard et al. 2001, "Color transfer between images"): in CIE L*a*b*
(OpenCV's float conversion: L in 0..100, a and b about -128..127, D65), every channel is
moved to the target's mean and standard deviation,
``x' = (x - mean_src) / std_src * std_tgt + mean_tgt``.

**Macenko** (Macenko et al. 2009, "A method for normalizing histology slides for
quantitative analysis"): optical density ``OD = -log((I + 1) / (I0 + 1))`` with the
background ``I0`` estimated per image (per-channel median of the brightest 10 % of pixels, so
a yellowish or grey illumination becomes OD 0); pixels with every OD channel >= ``beta``;
plane of the two leading eigenvectors of their OD covariance; the stain vectors are the
directions at the ``alpha`` and ``100 - alpha`` percentiles of the angle in that plane;
concentrations by least squares; each stain's concentrations rescaled so that its 99th
percentile equals the target's; the image rebuilt with the target's stain vectors and
background colour (:class:`MacenkoTarget`).

**Domain randomisation** (:func:`domain_augment`): the opposite strategy, applied to the
*training* images: random hue rotation, saturation, illumination tint, gamma, blur and
rescaling, so that a classifier trained on one lab sees a spread of stains and optics.

**Scale** (:func:`estimate_rbc_diameter`, :func:`normalize_scale`): the red cells of a
smear are a ruler that does not depend on the white cell's class; their median diameter in
the image (circle Hough transform of the optical-density image, circles centred on the white
cell ignored) against the training images' median gives the factor by which to resize.

>>> import numpy as np
>>> img = np.full((32, 32, 3), 200, np.uint8); img[8:24, 8:24] = (120, 60, 160)
>>> out = reinhard_normalize(img, np.array([70., 10., -10.]), np.array([15., 10., 10.]))
>>> out.shape, out.dtype
((32, 32, 3), dtype('uint8'))
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import MorphocellError

__all__ = [
    "DomainAugmentConfig",
    "MacenkoTarget",
    "StainNormalizationError",
    "background_rgb",
    "domain_augment",
    "estimate_rbc_diameter",
    "fit_macenko_target",
    "fit_rbc_target",
    "fit_reinhard_target",
    "lab_stats",
    "macenko_normalize",
    "macenko_stains",
    "normalize_scale",
    "reinhard_normalize",
    "write_domain_copies",
]


class StainNormalizationError(MorphocellError):
    """Stain or scale normalisation could not run (bad image, bad target, too few pixels)."""


def _check_image(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise StainNormalizationError(f"expected an HxWx3 uint8 RGB image, got shape "
                                      f"{img.shape} dtype {img.dtype}")
    if img.shape[0] < 2 or img.shape[1] < 2:
        raise StainNormalizationError(f"image of shape {img.shape} is too small")
    return img


def _check_vec(v, name: str, positive: bool = False) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.all(np.isfinite(a)) or (positive and np.any(a <= 0)):
        raise StainNormalizationError(f"{name} must be 3 finite{' positive' if positive else ''}"
                                      f" numbers, got {v!r}")
    return a


def _to_lab(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def lab_stats(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (ddof=0) of the image in L*a*b*.

    ``mask`` (bool HxW, optional) restricts the statistics to its pixels.
    """
    img = _check_image(image)
    lab = _to_lab(img).reshape(-1, 3).astype(np.float64)
    if mask is not None:
        m = np.asarray(mask, bool)
        if m.shape != img.shape[:2]:
            raise StainNormalizationError(f"mask of shape {m.shape} does not match image "
                                          f"{img.shape[:2]}")
        lab = lab[m.reshape(-1)]
        if lab.shape[0] < 2:
            raise StainNormalizationError("mask selects fewer than 2 pixels")
    return lab.mean(axis=0), lab.std(axis=0)


def reinhard_normalize(image: np.ndarray, target_means, target_stds,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """Reinhard colour transfer of ``image`` to the target L*a*b* means and stds.

    The source statistics are those of the whole image (or of ``mask``'s pixels); every
    pixel is mapped. A channel with zero spread is only shifted. Returns uint8 RGB (clipped).
    """
    import cv2

    img = _check_image(image)
    mt = _check_vec(target_means, "target_means")
    st = _check_vec(target_stds, "target_stds", positive=True)
    ms, ss = lab_stats(img, mask)
    lab = _to_lab(img).astype(np.float64)
    scale = np.where(ss > 1e-6, st / np.maximum(ss, 1e-12), 1.0)
    out = (lab - ms) * scale + mt
    rgb = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def fit_reinhard_target(images: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Target of :func:`reinhard_normalize`: the mean over ``images`` of their per-image
    L*a*b* means and of their per-image standard deviations."""
    stats = [lab_stats(im) for im in images]
    if not stats:
        raise StainNormalizationError("no images to fit the Reinhard target on")
    return (np.mean([s[0] for s in stats], axis=0), np.mean([s[1] for s in stats], axis=0))


# -- Macenko ---------------------------------------------------------------------------------
def background_rgb(image: np.ndarray, quantile: float = 0.10) -> np.ndarray:
    """Background colour: per-channel median of the brightest ``quantile`` share of pixels
    (brightness = R + G + B), float64 (3,). The same rule as the Otsu segmentation's."""
    img = _check_image(image).reshape(-1, 3).astype(np.float64)
    br = img.sum(axis=1)
    return np.median(img[br >= np.quantile(br, 1.0 - quantile)], axis=0)


def _od(img: np.ndarray, bg: np.ndarray) -> np.ndarray:
    return np.maximum(np.log((bg + 1.0) / (img.astype(np.float64) + 1.0)), 0.0)


def macenko_stains(image: np.ndarray, beta: float = 0.15, alpha: float = 1.0,
                   min_pixels: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Stain vectors and concentrations of one image (Macenko et al. 2009).

    Returns ``(stains, conc)``: ``stains`` (3, 2) unit OD vectors, first the one absorbing
    red the most (the nuclear, azure/haematoxylin-like stain), then the eosin-like one;
    ``conc`` (H*W, 2) least-squares concentrations of every pixel. Raises
    :class:`StainNormalizationError` when fewer than ``min_pixels`` pixels are stained.
    """
    img = _check_image(image)
    od = _od(img, background_rgb(img)).reshape(-1, 3)
    sel = od[np.all(od >= beta, axis=1)]
    if sel.shape[0] < min_pixels:
        raise StainNormalizationError(f"only {sel.shape[0]} stained pixels (OD >= {beta}); "
                                      f"need {min_pixels}")
    _, vecs = np.linalg.eigh(np.cov(sel, rowvar=False))
    plane = vecs[:, [2, 1]]  # two leading eigenvectors
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD
    proj = sel @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100.0 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.stack([v1, v2], axis=1) if v1[0] >= v2[0] else np.stack([v2, v1], axis=1)
    stains = stains / np.linalg.norm(stains, axis=0, keepdims=True)
    conc, *_ = np.linalg.lstsq(stains, od.T, rcond=None)
    return stains, conc.T


@dataclass(frozen=True)
class MacenkoTarget:
    """What :func:`macenko_normalize` maps to: stain vectors (3, 2), the 99th percentile of
    each stain's concentration (2,), and the background colour (3,) of the rebuilt image."""

    stains: np.ndarray
    max_conc: np.ndarray
    background: np.ndarray


def macenko_normalize(image: np.ndarray, target: MacenkoTarget, beta: float = 0.15,
                      alpha: float = 1.0) -> np.ndarray:
    """The image rebuilt with the target's stain vectors, concentration scale and background.

    Returns uint8 RGB. Raises :class:`StainNormalizationError` where the image has too few
    stained pixels to estimate its stains (see :func:`macenko_stains`).
    """
    img = _check_image(image)
    tstains = np.asarray(target.stains, np.float64)
    tmax = np.asarray(target.max_conc, np.float64)
    tbg = _check_vec(target.background, "target background")
    if tstains.shape != (3, 2) or tmax.shape != (2,) or np.any(tmax <= 0):
        raise StainNormalizationError("MacenkoTarget needs stains (3, 2) and max_conc (2,) > 0")
    _, conc = macenko_stains(img, beta, alpha)
    cmax = np.percentile(conc, 99, axis=0)
    conc = conc * (tmax / np.maximum(cmax, 1e-6))
    od = conc @ tstains.T
    out = (tbg + 1.0) * np.exp(-od) - 1.0
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(img.shape)


def fit_macenko_target(images: Iterable[np.ndarray], beta: float = 0.15,
                       alpha: float = 1.0) -> MacenkoTarget:
    """Target of :func:`macenko_normalize` from training images: the normalised mean of the
    per-image stain vectors, the median of the per-image 99th-percentile concentrations and
    the median background colour (images with too few stained pixels are skipped)."""
    st, mx, bg = [], [], []
    for im in images:
        try:
            s, c = macenko_stains(im, beta, alpha)
        except StainNormalizationError:
            continue
        st.append(s)
        mx.append(np.percentile(c, 99, axis=0))
        bg.append(background_rgb(im))
    if not st:
        raise StainNormalizationError("no usable image to fit the Macenko target on")
    s = np.mean(st, axis=0)
    s = s / np.linalg.norm(s, axis=0, keepdims=True)
    return MacenkoTarget(s, np.median(mx, axis=0), np.median(bg, axis=0))


# -- scale -----------------------------------------------------------------------------------
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
@dataclass(frozen=True)
class DomainAugmentConfig:
    """Ranges of :func:`domain_augment` (each drawn uniformly per image).

    ``hue``: rotation of the HSV hue, as a fraction of the colour wheel (+-);
    ``saturation``: factor range on HSV saturation; ``tint``: per-channel gain range
    (illumination colour, e.g. a yellowish lamp); ``gamma``: exponent range on intensities in
    0..1; ``blur``: Gaussian sigma range in px (0: none); ``scale``: resize factor range.
    """

    hue: float = 0.08
    saturation: tuple[float, float] = (0.6, 1.4)
    tint: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.7, 1.4)
    blur: tuple[float, float] = (0.0, 2.0)
    scale: tuple[float, float] = (0.5, 1.2)


def domain_augment(image: np.ndarray, rng: np.random.Generator,
                   config: DomainAugmentConfig = DomainAugmentConfig()) -> tuple[np.ndarray, dict]:
    """One random stain / optics / scale variant of a training image.

    Order: rescale (area interpolation when shrinking, bicubic when enlarging), Gaussian blur,
    hue rotation and saturation factor in HSV (OpenCV float HSV, hue in degrees), gamma, then
    per-channel gain, clipped. Returns ``(uint8 image, the drawn parameters)``; the same
    ``rng`` state gives the same image.
    """
    import cv2

    img = _check_image(image)
    c = config
    p = {"scale": float(rng.uniform(*c.scale)), "blur": float(rng.uniform(*c.blur)),
         "hue": float(rng.uniform(-c.hue, c.hue)),
         "saturation": float(rng.uniform(*c.saturation)),
         "gamma": float(rng.uniform(*c.gamma)),
         "tint": rng.uniform(*c.tint, size=3).round(4).tolist()}
    h, w = img.shape[:2]
    out = img
    if abs(p["scale"] - 1.0) > 1e-3:
        size = (max(8, round(w * p["scale"])), max(8, round(h * p["scale"])))
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA if p["scale"] < 1
                         else cv2.INTER_CUBIC)
    f = out.astype(np.float32) / 255.0
    if p["blur"] > 0.05:
        f = cv2.GaussianBlur(f, (0, 0), p["blur"])
    hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * p["hue"], 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * p["saturation"], 0.0, 1.0)
    f = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    f = np.power(np.clip(f, 0.0, 1.0), p["gamma"]) * np.asarray(p["tint"], np.float32)
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8), p


def write_domain_copies(paths: Sequence[str | os.PathLike], folder: str | os.PathLike,
                        seed: int = 0, config: DomainAugmentConfig = DomainAugmentConfig(),
                        n_threads: int | None = None, verbose: int = 0) -> list[str | None]:
    """One :func:`domain_augment` copy of each image file, written as JPEG (quality 95).

    The copy of an image depends only on its content, ``seed`` and ``config``: it is drawn
    with ``numpy.random.default_rng([seed, <64 bits of the image's SHA-256>])`` and stored as
    ``folder/<image sha256 prefix>-<settings hash>.jpg``; a file already there is reused, so
    a rerun (e.g. a second ``morphocell train`` with the same images) writes nothing and its
    features come from the feature cache. Files are written atomically.

    Returns the copy's path per input, ``None`` where the image could not be read.
    """
    import hashlib
    import json
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import asdict
    from pathlib import Path

    import cv2

    from ._utils import atomic_path, file_sha256, progress
    from .io import read_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(json.dumps({"seed": int(seed), "config": asdict(config),
                                     "format": 1}, sort_keys=True).encode()).hexdigest()[:10]

    def one(path) -> str | None:
        try:
            digest = file_sha256(path)
        except OSError:
            return None
        dst = folder / f"{digest[:24]}-{tag}.jpg"
        if dst.is_file():
            return str(dst)
        try:
            img = read_image(path)
        except MorphocellError:
            return None
        rng = np.random.default_rng([int(seed), int(digest[:16], 16)])
        out, _ = domain_augment(img, rng, config)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB image
            return None
        with atomic_path(dst) as tmp:
            Path(tmp).write_bytes(buf.tobytes())
        return str(dst)

    paths = [os.fspath(p) for p in paths]
    n_threads = n_threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(progress(pool.map(one, paths), total=len(paths), desc="domain copies",
                             verbose=verbose))
