r"""Texture features of nucleus, cytoplasm and cell, on the 8-bit grey image ``crop.gray``.

Three groups, all computed for the three regions in one pass each (numba kernels in
:mod:`morphocell.features._kernels.texture`):

**GLCM / Haralick** (``{Region}_Texture_Glcm{Feature}_Gray_{d}``, d in 1, 2, 4).
Grey levels are quantised with fixed bins so values compare across images:
``k = floor(gray / 8) + 1`` in ``1 .. 32`` (``LEVELS = 32`` bins of width 8 over 0..255).
For each distance ``d`` and each of the 4 angles 0, 45, 90, 135 degrees (offsets ``(0, d)``,
``(d, d)``, ``(d, 0)``, ``(d, -d)`` in (row, col); the diagonal is the chessboard distance, as
in mahotas and pyradiomics) the *symmetric* co-occurrence matrix counts the pixel pairs whose
two pixels both lie in the region; ``p(i, j) = S(i, j) / sum S``. With the marginal
``p_x = p_y`` (symmetric), ``p_{x+y}(k) = sum_{i+j=k} p(i,j)``,
``p_{x-y}(k) = sum_{|i-j|=k} p(i,j)``, ``mu = sum_i i p_x(i)``, ``sigma^2 = sum_i (i - mu)^2
p_x(i)``, ``H(q) = -sum q log2 q``, ``HX = H(p_x)``, ``HXY = H(p)``:

==========================  ============================================================
AngularSecondMoment         ``sum p(i,j)^2``
Contrast                    ``sum (i-j)^2 p(i,j)``
Correlation                 ``(sum i j p(i,j) - mu^2) / sigma^2``; 1 when ``sigma = 0``
                            (one grey level; as mahotas and scikit-image)
Variance                    ``sigma^2`` (Haralick's "sum of squares: variance")
InverseDifferenceMoment     ``sum p(i,j) / (1 + (i-j)^2)`` (scikit-image "homogeneity")
SumAverage                  ``SA = sum_k k p_{x+y}(k)``, k = 2 .. 2L
SumVariance                 ``sum_k (k - SA)^2 p_{x+y}(k)`` (not Haralick's typo using SE)
SumEntropy                  ``H(p_{x+y})``
Entropy                     ``HXY``
DifferenceVariance          ``sum_k (k - DA)^2 p_{x-y}(k)``, ``DA = sum_k k p_{x-y}(k)``
                            (the variance of ``|i-j|``: mahotas ``use_x_minus_y_variance``)
DifferenceEntropy           ``H(p_{x-y})``
Imc1                        ``(HXY - HXY1) / max(HX, HY)`` (0 / 0 -> 0)
Imc2                        ``sqrt(1 - exp(-2 (HXY2 - HXY)))``
==========================  ============================================================

with ``HXY1 = -sum p(i,j) log2(p_x(i) p_y(j))`` and ``HXY2 = -sum p_x(i) p_y(j)
log2(p_x(i) p_y(j))``, both identically equal to ``HX + HY = 2 HX`` (used as such). Each
feature is computed per angle and averaged over the angles that have at least one pair
(mahotas ``haralick(return_mean=True)``), summed as ``(f0 + f90) + (f45 + f135)`` so the mean
is bit-identical under 90-degree rotations and flips (they permute the angles); NaN when no
angle has a pair. This equals mahotas ``haralick(g, ignore_zeros=True, distance=d,
return_mean=True, use_x_minus_y_variance=True)`` on ``g = k`` inside the region and 0
outside (tests: worst relative difference ~1e-12). Sums such as ``sum p^2``, the variance
and correlation numerators are exact 64-bit integer sums of counts.

**Uniform LBP** (``{Region}_Texture_Lbp_Gray_{P}_{R}_Bin{b}``, (P, R) in (8, 1), (16, 2)).
scikit-image ``local_binary_pattern(gray, P, R, method='uniform')`` codes (rotation-invariant
uniform patterns: the number of neighbours ``>=`` the centre when the circular pattern has
at most 2 transitions, else ``P + 1``; bilinear samples, 0 outside the crop) computed on the
whole crop, histogrammed over the region's pixels and divided by the region's pixel count:
bins ``0 .. P + 1`` sum to 1. The codes equal scikit-image's bit for bit: a float32 estimate
of each interpolated sample decides its bit when it is farther than 1/64 from the centre (its
error is < 1e-3), scikit-image's own float64 operations decide the rest (~0.4 %). The sample circle is symmetric under 90-degree rotations and flips, so the
histogram is invariant except at pixels where an interpolated sample ties the centre (e.g.
a flat 2x2 patch): there scikit-image's rounding, hence the bit, depends on orientation
(measured: 14 pixel codes of 325,000 change under a 90-degree rotation).

**Granularity** (``{Region}_Texture_Granularity_Gray_{i}``, i = 1 .. ``GRANULARITY_STEPS``),
after CellProfiler's MeasureGranularity (a granulometry): the signal is the
background-subtracted darkness ``s = max(0, b - gray)`` inside the cell and 0 outside, where
``b`` is the lower median grey level of the crop's non-cell pixels (the glass; 255 when
there are none). ``gamma_i`` is the grey opening of ``s`` by the city-block diamond of
radius ``i`` (``i`` erosions then ``i`` dilations by the 3x3 cross, CellProfiler's
structuring element; 0 outside the image).
``G_i = 100 (mean_R(gamma_{i-1}) - mean_R(gamma_i)) / mean_R(s)``: the percentage of the
region's signal removed at step i (0 when the region has no signal). Differences from
CellProfiler, on purpose: no subsampling (granules are 2-8 px here), the background is the
glass level instead of a tophat by a large disk, and a plain opening instead of
opening-by-reconstruction (``gamma_i <= rec_i``), which keeps it at ~0.25 ms per cell.
Sums of the uint8 openings are exact integers (bit-identical under 90-degree rotations and
flips, the diamond being symmetric). 12 steps: on 20 PBC train images per class the cell
spectra of the 8 classes differ at radii 1-10 (Kruskal-Wallis p from 2e-20 at radius 1 to
7e-3 at 10; 0.4 and 0.5 at 11, 12), the cytoplasm spectra at all 12 radii (p <= 7e-3);
granulocytes (eosinophil, basophil, neutrophil) and monocytes lose 3.6-4.9 % of their
signal per step at radii 3-4 against 1.9-2.5 % for lymphocytes, immature granulocytes and
erythroblasts.

**Cost**: about 0.75 ms of one core per PBC cell (~14,000 pixels, crop ~148 x 137): GLCM
counts ~120 us, Haralick ~80 us, both LBP histograms ~220 us (one call), granularity
~200 us. numba compiles the kernels once (~15 s), then loads them from its cache.

NaN policy: every feature of an empty region is NaN; GLCM features are also NaN at a
distance where the region has no pixel pair (e.g. a one-pixel nucleus). Otherwise nothing
is NaN or infinite: a one-level region has correlation 1, ``Imc1 = 0`` and a region without
dark signal has granularity 0.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ..errors import FeatureError
from ._kernels import texture as k
from .base import Crop, as_dict
from .registry import REGIONS, FeatureSpec

__all__ = [
    "NAMES", "specs", "compute", "compute_array", "labels_and_levels", "lbp_counts",
    "granularity_sums", "LEVELS", "DISTANCES", "HARALICK_FEATURES",
    "LBP_PARAMS", "GRANULARITY_STEPS", "quantize", "region_labels", "glcm_offsets",
    "glcm_counts", "region_glcm", "haralick", "glcm_features", "lbp_offsets",
    "lbp_histograms", "granularity_signal", "granularity",
]

#: number of grey levels of the GLCM (fixed bins of width 256 / LEVELS)
LEVELS = 32
#: GLCM distances (pixels; chessboard distance for the diagonals)
DISTANCES = (1, 2, 4)
#: (name token, one-line meaning, formula) of the 13 Haralick features, in kernel order
HARALICK_FEATURES = (
    ("AngularSecondMoment", "GLCM angular second moment (energy squared)", "sum p(i,j)^2"),
    ("Contrast", "GLCM contrast", "sum (i-j)^2 p(i,j)"),
    ("Correlation", "GLCM correlation (1 for a single grey level)",
     "(sum i j p(i,j) - mu^2) / sigma^2"),
    ("Variance", "GLCM sum of squares: variance of the grey level",
     "sum (i-mu)^2 p_x(i)"),
    ("InverseDifferenceMoment", "GLCM inverse difference moment (homogeneity)",
     "sum p(i,j) / (1 + (i-j)^2)"),
    ("SumAverage", "GLCM sum average", "SA = sum_k k p_{x+y}(k)"),
    ("SumVariance", "GLCM sum variance", "sum_k (k - SA)^2 p_{x+y}(k)"),
    ("SumEntropy", "GLCM sum entropy (bits)", "-sum_k p_{x+y}(k) log2 p_{x+y}(k)"),
    ("Entropy", "GLCM entropy (bits)", "HXY = -sum p(i,j) log2 p(i,j)"),
    ("DifferenceVariance", "GLCM difference variance (variance of |i-j|)",
     "sum_k (k - DA)^2 p_{x-y}(k), DA = sum_k k p_{x-y}(k)"),
    ("DifferenceEntropy", "GLCM difference entropy (bits)",
     "-sum_k p_{x-y}(k) log2 p_{x-y}(k)"),
    ("Imc1", "GLCM information measure of correlation 1",
     "(HXY - HXY1) / max(HX, HY), HXY1 = HX + HY"),
    ("Imc2", "GLCM information measure of correlation 2",
     "sqrt(1 - exp(-2 (HXY2 - HXY))), HXY2 = HX + HY"),
)
#: (P, R) of the uniform LBP histograms
LBP_PARAMS = ((8, 1), (16, 2))
#: number of granularity steps (openings by diamonds of radius 1 .. GRANULARITY_STEPS)
GRANULARITY_STEPS = 12

_GLCM_REF = ("Haralick et al. 1973; mahotas.features.haralick(ignore_zeros=True, "
             "return_mean=True, use_x_minus_y_variance=True) on levels 1..32 inside the "
             "region, 0 outside")


def specs() -> list[FeatureSpec]:
    """Names, units and formulas of the texture family, in column order."""
    out = []
    for r in REGIONS:
        reg = r.lower()
        for d in DISTANCES:
            for tok, meaning, formula in HARALICK_FEATURES:
                out.append(FeatureSpec(
                    f"{r}_Texture_Glcm{tok}_Gray_{d}", "texture", r, "1",
                    f"{meaning} of the {reg}, distance {d}, mean over 0/45/90/135 deg",
                    f"{formula}; p = symmetric GLCM of pairs inside the {reg}, grey levels "
                    f"k = floor(gray/8)+1 in 1..{LEVELS}",
                    _GLCM_REF))
        for p, rad in LBP_PARAMS:
            for b in range(p + 2):
                what = (f"{b} neighbours >= centre" if b <= p
                        else "non-uniform patterns")
                out.append(FeatureSpec(
                    f"{r}_Texture_Lbp_Gray_{p}_{rad}_Bin{b}", "texture", r, "1",
                    f"fraction of {reg} pixels with uniform LBP code {b} ({what}), "
                    f"P={p}, R={rad}",
                    f"#{{x in {reg}: LBP_riu2(x) = {b}}} / #{reg}",
                    f"skimage.feature.local_binary_pattern(gray, {p}, {rad}, 'uniform')"))
        for i in range(1, GRANULARITY_STEPS + 1):
            out.append(FeatureSpec(
                f"{r}_Texture_Granularity_Gray_{i}", "texture", r, "1",
                f"% of the {reg}'s dark signal removed by the opening of radius {i} "
                f"after radius {i - 1}",
                f"100 (mean(gamma_{i - 1}) - mean(gamma_{i})) / mean(s) over the {reg}; "
                "gamma_i = grey opening of s = max(0, glass - gray) by the diamond |y|+|x|<=i",
                "CellProfiler MeasureGranularity (no subsampling, glass-level background, "
                "plain opening)"))
    return out


# ---- the steps of compute_array (public: each validates, allocates and calls one kernel) ----

def _level_shift(levels: int) -> int:
    if levels < 2 or 256 % levels or levels > 128:
        raise FeatureError(f"GLCM levels must be a power of 2 in 2..128, got {levels}")
    return int(np.log2(256 // levels))


def labels_and_levels(nucleus: np.ndarray, cytoplasm: np.ndarray, gray: np.ndarray,
                      levels: int = LEVELS) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Region labels and GLCM levels in one pass: ``(lab, q, n_nucleus, n_cytoplasm)``.

    ``lab`` (uint8): 0 background, 1 nucleus, 2 cytoplasm (the nucleus wins overlaps);
    ``q = floor(gray * levels / 256)`` (uint8, ``0 .. levels - 1``; add 1 for the level
    values ``k = 1 .. levels`` of the formulas); the pixel counts of the two regions.
    """
    shift = _level_shift(levels)
    gray = np.ascontiguousarray(gray, np.uint8)
    nuc = np.asarray(nucleus, bool)
    cyt = np.asarray(cytoplasm, bool)
    if gray.ndim != 2 or nuc.shape != gray.shape or cyt.shape != gray.shape:
        raise FeatureError(f"texture needs a 2-D grey image and masks of its shape, got "
                           f"{gray.shape}, {nuc.shape}, {cyt.shape}")
    return _labels_levels(nuc, cyt, gray, shift)


def _labels_levels(nuc: np.ndarray, cyt: np.ndarray, gray: np.ndarray, shift: int):
    lab = np.empty(gray.shape, np.uint8)
    q = np.empty(gray.shape, np.uint8)
    n_nuc, n_cyt = k.labels_levels(nuc, cyt, gray, shift, lab, q)
    return lab, q, n_nuc, n_cyt


def quantize(gray: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """Fixed-bin grey levels ``0 .. levels-1``: ``floor(gray * levels / 256)`` (uint8), as
    :func:`labels_and_levels` makes them.

    Add 1 for the level values ``k = 1 .. levels`` used in the formulas.
    """
    gray = np.asarray(gray, np.uint8)
    none = np.zeros(gray.shape, bool)
    return labels_and_levels(none, none, gray, levels)[1]


def region_labels(crop: Crop) -> np.ndarray:
    """``uint8`` label image: 0 background, 1 nucleus, 2 cytoplasm (nucleus wins overlaps);
    the labelling of :func:`compute_array` (:func:`labels_and_levels`)."""
    return labels_and_levels(crop.nucleus, crop.cytoplasm, crop.gray)[0]


def glcm_offsets(distances=DISTANCES) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) offsets, distance-major, angles 0, 45, 90, 135 degrees: ``(0, d)``,
    ``(d, d)``, ``(d, 0)``, ``(d, -d)`` (mahotas' directions)."""
    off_r, off_c = _glcm_offsets(tuple(int(d) for d in distances))
    return off_r.copy(), off_c.copy()


@lru_cache(maxsize=16)
def _glcm_offsets(distances: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    off_r, off_c = [], []
    for d in distances:
        off_r += [0, d, d, d]
        off_c += [d, d, 0, -d]
    r, c = np.asarray(off_r, np.int64), np.asarray(off_c, np.int64)
    r.setflags(write=False)
    c.setflags(write=False)
    return r, c


def glcm_counts(q: np.ndarray, lab: np.ndarray, distances=DISTANCES,
                levels: int = LEVELS) -> np.ndarray:
    """Directed pair counts ``(4 * len(distances), 2 levels, 2 levels)`` int32.

    Pixel code ``e = (lab - 1) * levels + q``: block ``[:L, :L]`` counts nucleus/nucleus
    pairs, ``[L:, L:]`` cytoplasm/cytoplasm pairs, the off-diagonal blocks mixed pairs. See
    :func:`region_glcm` for the symmetric GLCM of one region.
    """
    if levels < 2 or levels > 127:
        raise FeatureError(f"GLCM levels must be in 2..127, got {levels}")
    off_r, off_c = _glcm_offsets(tuple(int(d) for d in distances))
    return _glcm_counts(np.ascontiguousarray(q, np.uint8), np.ascontiguousarray(lab, np.uint8),
                        off_r, off_c, int(levels))


def _glcm_counts(q: np.ndarray, lab: np.ndarray, off_r: np.ndarray, off_c: np.ndarray,
                 levels: int) -> np.ndarray:
    out = np.zeros((off_r.size, 2 * levels, 2 * levels), np.int32)
    k.glcm_counts(q, lab, off_r, off_c, out)
    return out


def region_glcm(counts: np.ndarray, offset_index: int, region: str) -> np.ndarray:
    """Symmetric GLCM ``C + C.T`` (int64, levels x levels) of one region and offset."""
    c = counts[offset_index].astype(np.int64)
    n = c.shape[0] // 2
    if region == "Nucleus":
        m = c[:n, :n]
    elif region == "Cytoplasm":
        m = c[n:, n:]
    elif region == "Cell":
        m = c[:n, :n] + c[n:, n:] + c[:n, n:] + c[n:, :n]
    else:
        raise FeatureError(f"unknown region {region!r}; use Nucleus, Cytoplasm or Cell")
    return m + m.T


_NLOG = np.zeros(1 << 13)
_NLOG[1:] = np.arange(1, 1 << 13) * np.log2(np.arange(1, 1 << 13))


def haralick(counts: np.ndarray, n_dist: int) -> np.ndarray:
    """``(3 regions, n_dist, 13)`` Haralick features from :func:`glcm_counts` output."""
    out = np.empty((3, n_dist, k.N_HARALICK))
    k.haralick_from_counts(counts, n_dist, _NLOG, out)
    return out


def glcm_features(directed: np.ndarray) -> np.ndarray:
    """The 13 Haralick features (kernel order) of the symmetric GLCM ``C + C.T`` of one
    ``(L, L)`` matrix of directed pair counts (e.g. scikit-image's ``graycomatrix(...,
    symmetric=False)[:, :, 0, 0]``); NaN when it is empty."""
    c = np.asarray(directed)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise FeatureError(f"a GLCM must be a square 2-D array, got shape {c.shape}")
    n = c.shape[0]
    counts = np.zeros((4, 2 * n, 2 * n), np.int32)
    counts[:, :n, :n] = c
    return haralick(counts, 1)[0, 0]


def lbp_offsets(p: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample offsets exactly as scikit-image computes them (rounded to 5 decimals)."""
    rp, cp = _lbp_offsets(int(p), float(radius))
    return rp.copy(), cp.copy()


@lru_cache(maxsize=16)
def _lbp_offsets(p: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    ang = 2 * np.pi * np.arange(p, dtype=np.double) / p
    rp, cp = np.round(-radius * np.sin(ang), 5), np.round(radius * np.cos(ang), 5)
    rp.setflags(write=False)
    cp.setflags(write=False)
    return rp, cp


class _LbpPlan(NamedTuple):
    """Sample offsets of several (P, R) in turn, as the LBP kernel takes them."""

    rps: np.ndarray
    cps: np.ndarray
    n_ps: np.ndarray
    width: int  # max P + 2: bins of the kernel's output


@lru_cache(maxsize=16)
def _lbp_plan(params: tuple[tuple[int, float], ...]) -> _LbpPlan:
    offs = [_lbp_offsets(p, rad) for p, rad in params]
    n_ps = np.array([rp.size for rp, _ in offs], np.int64)
    if n_ps.size == 0 or n_ps.min() < 2 or n_ps.max() > 30:
        raise FeatureError(f"LBP needs 2 <= P <= 30 samples, got {n_ps.tolist()}")
    plan = _LbpPlan(np.concatenate([rp for rp, _ in offs]),
                    np.concatenate([cp for _, cp in offs]), n_ps, int(n_ps.max()) + 2)
    for a in plan[:3]:
        a.setflags(write=False)
    return plan


def lbp_counts(gray: np.ndarray, lab: np.ndarray, params=LBP_PARAMS) -> np.ndarray:
    """Uniform-LBP code counts ``(len(params), 2, max P + 2)`` int64 of every ``(P, R)`` of
    ``params`` (one kernel call, one padding) over nucleus (``[:, 0]``) and cytoplasm
    (``[:, 1]``); codes ``0 .. P + 1`` of a ``(P, R)`` fill its first ``P + 2`` bins. ``lab``
    as :func:`labels_and_levels` makes it (0, 1, 2)."""
    plan = _lbp_plan(tuple((int(p), float(rad)) for p, rad in params))
    return _lbp_counts(np.ascontiguousarray(gray, np.uint8), np.ascontiguousarray(lab, np.uint8),
                       plan)


def _lbp_counts(gray: np.ndarray, lab: np.ndarray, plan: _LbpPlan) -> np.ndarray:
    out = np.zeros((plan.n_ps.size, 2, plan.width), np.int64)
    k.lbp_uniform_counts(gray, lab, plan.rps, plan.cps, plan.n_ps, out)
    return out


def lbp_histograms(gray: np.ndarray, lab: np.ndarray, p: int, radius: float) -> np.ndarray:
    """Uniform-LBP code counts ``(2, p + 2)`` int64 over nucleus (row 0) and cytoplasm of
    one ``(P, R)`` (:func:`lbp_counts`); ``lab`` as :func:`region_labels` makes it."""
    lab = np.ascontiguousarray(lab, np.uint8)
    if lab.size and lab.max() > 2:
        raise FeatureError(f"region labels must be 0, 1 or 2, got {int(lab.max())}")
    return lbp_counts(gray, lab, ((p, radius),))[0]


def granularity_signal(gray: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """``uint8`` signal ``max(0, b - gray)`` in the cell, 0 outside; ``b`` = the lower median
    (the ceil(n/2)-th smallest) grey level of the n non-cell pixels (255 when n = 0). The
    signal whose openings :func:`granularity_sums` adds up (the same kernel)."""
    gray = np.ascontiguousarray(gray, np.uint8)
    cell = np.ascontiguousarray(cell, bool)
    if gray.ndim != 2 or cell.shape != gray.shape:
        raise FeatureError(f"granularity needs a 2-D grey image and a mask of its shape, got "
                           f"{gray.shape} and {cell.shape}")
    out = np.zeros((gray.shape[0] + 2, gray.shape[1] + 2), np.uint8)
    k.granularity_signal(gray, cell.view(np.uint8), out)
    return out[1:-1, 1:-1].copy()


def granularity_sums(gray: np.ndarray, lab: np.ndarray,
                     n_steps: int = GRANULARITY_STEPS) -> np.ndarray:
    """``(n_steps + 1, 2)`` int64: the sums over nucleus (column 0) and cytoplasm of the
    openings ``gamma_0 .. gamma_n_steps`` of :func:`granularity_signal`'s signal."""
    return _granularity_sums(np.ascontiguousarray(gray, np.uint8),
                             np.ascontiguousarray(lab, np.uint8), int(n_steps))


def _granularity_sums(gray: np.ndarray, lab: np.ndarray, n_steps: int) -> np.ndarray:
    out = np.zeros((n_steps + 1, 2), np.int64)
    k.granularity_sums(gray, lab, n_steps, out)
    return out


def granularity(gray: np.ndarray, lab: np.ndarray, n_steps: int = GRANULARITY_STEPS
                ) -> np.ndarray:
    """``(3 regions, n_steps)`` granularity spectra (%) of a grey image: the granularity
    columns of :func:`compute_array` (NaN for a region without pixels, 0 for a region
    without signal)."""
    lab = np.ascontiguousarray(lab, np.uint8)
    sums = granularity_sums(gray, lab, n_steps)
    out = np.empty((3, int(n_steps)))
    k.granularity_spectra(sums, int(np.count_nonzero(lab == 1)),
                          int(np.count_nonzero(lab == 2)), out)
    return out


# ---- the family API ------------------------------------------------------------------------

def compute_array(crop: Crop) -> np.ndarray:
    """Every texture feature of ``crop`` as a float64 vector in :data:`NAMES` order.

    Per region: 13 x len(DISTANCES) GLCM features (distance-major), the LBP histograms
    (``LBP_PARAMS`` order), then the granularity spectrum; NaN for an empty region. The
    steps are those of the public functions :func:`labels_and_levels`, :func:`glcm_counts`,
    :func:`haralick`, :func:`lbp_counts` and :func:`granularity_sums` (the same code after
    their argument checks, which a crop passes by construction); one kernel lays their
    results out (LBP counts as fractions of the region's pixels, the spectra as
    :func:`granularity`).
    """
    gray = crop.gray
    lab, q, n_nuc, n_cyt = _labels_levels(np.asarray(crop.nucleus, bool),
                                          np.asarray(crop.cytoplasm, bool), gray, _SHIFT)
    har = haralick(_glcm_counts(q, lab, _OFF_R, _OFF_C, LEVELS), len(DISTANCES))
    lbp = _lbp_counts(gray, lab, _LBP)
    sums = _granularity_sums(gray, lab, GRANULARITY_STEPS)
    out = np.empty(len(NAMES))
    if k.assemble(har, lbp, _LBP.n_ps, sums, n_nuc, n_cyt, out) != out.size:
        raise AssertionError("texture vector layout does not match NAMES")
    return out


def compute(crop: Crop) -> dict[str, float]:
    """Every texture feature of ``crop`` (NaN for an empty region), in :data:`NAMES` order."""
    return as_dict(NAMES, compute_array(crop))


# the module's parameters as the kernels take them
_SHIFT = _level_shift(LEVELS)
_OFF_R, _OFF_C = _glcm_offsets(DISTANCES)
_LBP = _lbp_plan(tuple((int(p), float(rad)) for p, rad in LBP_PARAMS))
#: column names of the texture family, in the order of :func:`compute_array`
NAMES: tuple[str, ...] = tuple(s.name for s in specs())
