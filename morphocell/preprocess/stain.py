"""Stain normalisation of one image to a target appearance: Reinhard (L*a*b* moments) and
Macenko (optical-density stain vectors)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ._common import StainNormalizationError, _check_image, _check_vec


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
