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

**Stain augmentation** (:func:`stain_augment`, ranges in :class:`StainAugmentConfig`): the
opposite strategy, applied to the *training* images: random hue rotation, saturation,
illumination tint, gamma, blur and rescaling, so that a classifier trained on one lab sees a
spread of stains and optics.

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

from ._common import StainNormalizationError
from .augment import STAIN_AUGMENT, StainAugmentConfig, stain_augment, write_stain_copies
from .scale import (batch_scale_factor, estimate_rbc_diameter, fit_rbc_target, normalize_scale,
                    resample, size_scale_factor)
from .stain import (MacenkoTarget, background_rgb, fit_macenko_target, fit_reinhard_target,
                    lab_stats, macenko_normalize, macenko_stains, reinhard_normalize)

__all__ = [
    "MacenkoTarget",
    "STAIN_AUGMENT",
    "StainAugmentConfig",
    "StainNormalizationError",
    "background_rgb",
    "batch_scale_factor",
    "estimate_rbc_diameter",
    "fit_macenko_target",
    "fit_rbc_target",
    "fit_reinhard_target",
    "lab_stats",
    "macenko_normalize",
    "macenko_stains",
    "normalize_scale",
    "reinhard_normalize",
    "resample",
    "size_scale_factor",
    "stain_augment",
    "write_stain_copies",
]
