r"""Shape features of nucleus, cytoplasm and cell (rotation-invariant measures only).

Every region ``R`` in (Nucleus, Cytoplasm, Cell) gets ``R_Shape_<Feature>`` for the
features below; the nucleus also gets ``LobeCount``, ``NucleusToCellRatio`` and
``CentroidOffset``. Units: ``px`` (pixel lengths), ``px2`` (pixel areas), ``px-1``
(curvature), ``1`` (dimensionless). Each name's unit, meaning and formula are in the
registry (:func:`specs`). Conventions shared by all features:

* A region is the set of ``True`` pixels of its mask; it may have several connected
  components (e.g. separated nuclear lobes) and holes (the cytoplasm is a ring); all
  pixels count. Pixel ``(r, c)`` has its centre at ``(r, c)``.
* Features with a scikit-image / mahotas counterpart use that counterpart's exact
  definition, so they are checked to floating-point precision
  (``tests/test_features_shape.py``):

  - Area, Perimeter (``skimage.measure.perimeter(mask, 4)``: 4-connectivity border
    pixels weighted by the local border configuration), ConvexArea (pixel centres inside
    the hull of the pixels' edge midpoints, ``convex_hull_image``), Solidity, Extent,
    Eccentricity, Major/MinorAxisLength (``4 sqrt(lambda_i)`` of the inertia tensor),
    EquivalentDiameter, FeretMax (``regionprops.feret_diameter_max``: largest distance
    between the crack points of the convex image), Hu1..Hu7 (``regionprops.moments_hu``;
    ``Hu7`` as its absolute value, see below);
  - ``Zernike_n_m``: ``|Z_nm|`` of ``mahotas.features.zernike_moments(mask, radius, 8,
    cm=centroid)`` with ``radius = RadiusMax + 0.5`` (so the disc covers every pixel
    centre) and the centroid as centre; degree <= 8; ``Z_0_0`` (always 1/pi) and ``Z_1_1``
    (0 at the centroid) are left out.

* Features checked against slow versions in ``tests/reference.py``: FeretMin (smallest
  caliper width of the same crack points as FeretMax, rotating calipers); RadiusMin/Max/
  Mean/Std (distances from the centroid to the centres of the 4-connectivity border
  pixels, the pixels Perimeter weighs); the curvature statistics (:func:`curvature_features`:
  outer contours resampled every ``CURVATURE_STEP`` px of arc length, Gaussian-smoothed with
  ``CURVATURE_SIGMA`` px, central differences) and BendingEnergy (``L sum kappa^2 ds /
  (4 pi^2)``: 1 for a circle, > 1 otherwise); LobeCount (:func:`lobe_count`: maxima of the
  exact Euclidean distance map with persistence >= max(1 px, 0.1 max distance)).
* Derived: Circularity ``4 pi A / P^2``, Roundness ``4 A / (pi Major^2)``,
  NucleusToCellRatio ``A_n / A_cell``, CentroidOffset ``|c_n - c_cell| / sqrt(A_cell/pi)``.

NaN policy: every feature of an empty region is NaN (e.g. no cytoplasm found). For a
non-empty region every value is finite except: ``Circularity`` is NaN when the perimeter
estimator gives 0 (regions of 1-2 pixels, as scikit-image's perimeter), ``Roundness`` is NaN
when ``MajorAxisLength`` is 0 (a single pixel), and the six curvature features are NaN when
no boundary contour is at least ``MIN_CONTOUR_LENGTH`` px long. ``LobeCount``,
``NucleusToCellRatio`` and ``CentroidOffset`` are NaN when the nucleus is empty.

Invariance: every feature is unchanged (to rounding) under 90-degree rotations, flips and
translations, since the pixel grid maps onto itself and each contour's curvature samples
start at a canonical point (its point farthest from the mean of its points). A tie there
(symmetric shapes) moves the samples along the contour; the curvature statistics then change
by about 1% at most (measured on synthetic ellipses; see ``CURVATURE_STEP``), not to
rounding. ``Extent`` (bounding-box based) is the only feature that is not also approximately
invariant under arbitrary rotations. ``Hu7`` changes sign under a reflection (a skew
invariant), and cells on a smear come in both handednesses, so its absolute value is reported.

Speed: one numba call per region (:func:`~morphocell.features._kernels.shape.region_shape`:
one raster pass for runs/border/perimeter, moments up to order 8 from per-run prefix sums,
Hu and Zernike from those moments, exact integer hull/chords for ConvexArea and Feret), one
``cv2.findContours`` + numba call per region for curvature, and an exact EDT + union-find
persistence on the nucleus bounding box for LobeCount. Buffers are reused per thread.
"""
from __future__ import annotations

import itertools
import threading

import numpy as np

from ._kernels import shape as K
from .base import Crop, as_dict
from .registry import REGIONS, FeatureSpec

__all__ = ["NAMES", "CORE_NAMES", "specs", "compute", "compute_array", "region_features",
           "curvature_features", "lobe_count", "CURVATURE_STEP", "CURVATURE_SIGMA", "MIN_CONTOUR_LENGTH",
           "LOBE_REL_PERSISTENCE", "LOBE_MIN_PERSISTENCE"]

#: arc-length step (px) at which boundary contours are resampled for curvature. Half a pixel:
#: at 1 px (about the spacing of the pixel chain's vertices) the staircase of the chain aliases
#: into the smoothed curve, and a 90-degree rotation, which moves the samples along the chain,
#: changed CurvatureStd/Min/Max by up to 0.7/3.1/1.9% on synthetic ellipses; at 0.5 px by up to
#: 0.1/1.1/0.8% (3000 ellipses x 6 rotations/flips; relative to max(|value|, 0.05 px-1)).
#: It costs ~0.14 ms per image (three regions) over the 1 px step.
CURVATURE_STEP = 0.5
#: standard deviation (px of arc length) of the Gaussian that smooths contours
CURVATURE_SIGMA = 3.0
#: contours shorter than this (px of arc length) are left out of the curvature statistics
MIN_CONTOUR_LENGTH = 16.0
#: a distance-map maximum is a lobe when its persistence is >= max(LOBE_MIN_PERSISTENCE,
#: LOBE_REL_PERSISTENCE * max distance)
LOBE_REL_PERSISTENCE = 0.1
LOBE_MIN_PERSISTENCE = 1.0

_REF_RP = "skimage.measure.regionprops"
_HU_FORM = {
    1: "eta20 + eta02",
    2: "(eta20 - eta02)^2 + 4 eta11^2",
    3: "(eta30 - 3 eta12)^2 + (3 eta21 - eta03)^2",
    4: "(eta30 + eta12)^2 + (eta21 + eta03)^2",
    5: "(eta30 - 3eta12)(eta30 + eta12)[(eta30 + eta12)^2 - 3(eta21 + eta03)^2] + "
       "(3eta21 - eta03)(eta21 + eta03)[3(eta30 + eta12)^2 - (eta21 + eta03)^2]",
    6: "(eta20 - eta02)[(eta30 + eta12)^2 - (eta21 + eta03)^2] + "
       "4 eta11 (eta30 + eta12)(eta21 + eta03)",
    7: "|(3eta21 - eta03)(eta30 + eta12)[(eta30 + eta12)^2 - 3(eta21 + eta03)^2] - "
       "(eta30 - 3eta12)(eta21 + eta03)[3(eta30 + eta12)^2 - (eta21 + eta03)^2]|",
}

# name -> (unit, meaning, formula, reference); "{r}" is the region in lower case
_BASE: dict[str, tuple[str, str, str, str]] = {
    "Area": ("px2", "number of {r} pixels", "A = sum(mask)", f"{_REF_RP} area"),
    "Perimeter": ("px", "length of the {r} boundary (4-connectivity border pixels, weighted)",
                  "border = mask & ~erode(mask, cross); code = 1 + 2 #4-nbrs + 10 #diag-nbrs "
                  "on the border; weight 1 (5,7,15,17,25,27), sqrt2 (21,33), (1+sqrt2)/2 (13,23)",
                  "skimage.measure.perimeter(mask, 4) / regionprops perimeter"),
    "ConvexArea": ("px2", "pixels of the convex hull image of the {r}",
                   "#pixel centres inside or on hull{(r+-1/2, c), (r, c+-1/2)}",
                   f"{_REF_RP} area_convex"),
    "Solidity": ("1", "area / convex area", "A / ConvexArea", f"{_REF_RP} solidity"),
    "Extent": ("1", "area / bounding-box area (invariant to 90-degree rotations and flips only)",
               "A / (rows * cols of the bbox)", f"{_REF_RP} extent"),
    "Eccentricity": ("1", "eccentricity of the ellipse with the same second moments",
                     "sqrt(1 - l2 / l1), l1 >= l2 eigenvalues of the inertia tensor "
                     "[[mu02, -mu11], [-mu11, mu20]] / mu00", f"{_REF_RP} eccentricity"),
    "MajorAxisLength": ("px", "major axis of the ellipse with the same second moments",
                        "4 sqrt(l1)", f"{_REF_RP} axis_major_length"),
    "MinorAxisLength": ("px", "minor axis of the ellipse with the same second moments",
                        "4 sqrt(l2)", f"{_REF_RP} axis_minor_length"),
    "EquivalentDiameter": ("px", "diameter of the disc of the same area", "sqrt(4 A / pi)",
                           f"{_REF_RP} equivalent_diameter_area"),
    "Circularity": ("1", "isoperimetric circularity (about 1 for a disc, lower when ragged); "
                         "NaN when the perimeter is 0",
                    "4 pi A / Perimeter^2", "CellProfiler FormFactor"),
    "Roundness": ("1", "area over the disc spanned by the major axis (1 for a disc); NaN for "
                       "a single pixel", "4 A / (pi MajorAxisLength^2)",
                  "ImageJ Round"),
    "FeretMax": ("px", "largest caliper (Feret) diameter",
                 "max distance between crack points (midpoints between convex-image pixels "
                 "and their 4-neighbours outside it)", f"{_REF_RP} feret_diameter_max"),
    "FeretMin": ("px", "smallest caliper width (same crack points as FeretMax)",
                 "min over hull edges of the farthest hull vertex from the edge line "
                 "(rotating calipers)", "tests/reference.py shape_feret (brute force)"),
    "RadiusMin": ("px", "smallest centroid-to-boundary distance",
                  "min |p - centroid| over border-pixel centres p (border as Perimeter)",
                  "tests/reference.py shape_radii"),
    "RadiusMax": ("px", "largest centroid-to-boundary distance",
                  "max |p - centroid| over border-pixel centres",
                  "tests/reference.py shape_radii"),
    "RadiusMean": ("px", "mean centroid-to-boundary distance",
                   "mean |p - centroid| over border-pixel centres",
                   "tests/reference.py shape_radii"),
    "RadiusStd": ("px", "spread of the centroid-to-boundary distance",
                  "std (ddof=0) of |p - centroid| over border-pixel centres",
                  "tests/reference.py shape_radii"),
}
for _i in range(1, 8):
    _BASE[f"Hu{_i}"] = ("1", f"Hu's moment invariant {_i} of the {{r}} mask"
                        + (" (absolute value: its sign only flips under reflection)"
                           if _i == 7 else ""),
                        _HU_FORM[_i] + "; eta_pq = mu_pq / mu00^((p+q)/2+1)",
                        f"{_REF_RP} moments_hu" + (" (abs)" if _i == 7 else ""))
_RC = "tests/reference.py shape_curvature_stats"
_CURV: dict[str, tuple[str, str, str, str]] = {
    "CurvatureMean": ("px-1", "mean signed boundary curvature (convex > 0)",
                      "sum kappa ds / sum ds over outer contours", _RC),
    "CurvatureStd": ("px-1", "spread of the boundary curvature",
                     "sqrt(sum kappa^2 ds / sum ds - mean^2)", _RC),
    "CurvatureMin": ("px-1", "most concave boundary curvature (negative at indentations)",
                     "min kappa", _RC),
    "CurvatureMax": ("px-1", "most convex boundary curvature", "max kappa",
                     _RC),
    "ConcaveFraction": ("1", "fraction of the boundary length with negative curvature",
                        "sum_{kappa<0} ds / sum ds", _RC),
    "BendingEnergy": ("1", "normalised bending energy (1 for a circle, > 1 otherwise)",
                      "length-weighted mean over contours of L * sum kappa^2 ds / (4 pi^2)",
                      "Young et al. 1974 bending energy, normalised; " + _RC),
}
_NUC: dict[str, tuple[str, str, str, str]] = {
    "LobeCount": ("1", "number of nuclear lobes: persistent maxima of the distance map",
                  "#maxima of the exact EDT with persistence >= max(1 px, 0.1 max EDT) "
                  "(0-dim persistent homology of superlevel sets, 8-connectivity)",
                  "tests/reference.py shape_lobe_count(_dynamics)"),
    "NucleusToCellRatio": ("1", "nucleus area / cell area", "A_nucleus / A_cell",
                           "N:C ratio"),
    "CentroidOffset": ("1", "distance between nucleus and cell centroids over the cell's "
                            "equivalent radius", "|c_nucleus - c_cell| / sqrt(A_cell / pi)",
                       ""),
}

_CURV_CONTEXT = (f" Contours: cv2.findContours(RETR_EXTERNAL, CHAIN_APPROX_NONE) of each "
                 f"component, >= {MIN_CONTOUR_LENGTH:g} px long, started at the point farthest "
                 f"from their mean, resampled every "
                 f"{CURVATURE_STEP:g} px of arc length, smoothed with a circular Gaussian "
                 f"(sigma {CURVATURE_SIGMA:g} px); kappa = (x'y'' - y'x'')/(x'^2+y'^2)^1.5 by "
                 "central differences.")


#: the features of every region computed by :func:`region_features`, in its output order
CORE_NAMES: tuple[str, ...] = (
    "Area", "Perimeter", "ConvexArea", "Solidity", "Extent", "Eccentricity",
    "MajorAxisLength", "MinorAxisLength", "EquivalentDiameter", "Circularity", "Roundness",
    "FeretMax", "FeretMin", "RadiusMin", "RadiusMax", "RadiusMean", "RadiusStd",
    "Hu1", "Hu2", "Hu3", "Hu4", "Hu5", "Hu6", "Hu7",
) + tuple(f"Zernike_{n}_{m}" for n, m in K.ZERNIKE_NM)
if len(CORE_NAMES) != K.N_CORE:  # the kernel's output layout and these names go together
    raise ImportError(f"shape kernel gives {K.N_CORE} values for {len(CORE_NAMES)} names")


def _feature_table() -> dict[str, tuple[str, str, str, str]]:
    table = dict(_BASE)
    for n, m in K.ZERNIKE_NM:
        table[f"Zernike_{n}_{m}"] = (
            "1", f"magnitude of the Zernike moment Z({n},{m}) of the {{r}} mask",
            "|Z_nm| = (n+1)/pi |sum_p R_nm(d_p) e^{-i m theta_p}| / N over the disc of radius "
            "RadiusMax + 0.5 around the centroid",
            "mahotas.features.zernike_moments(mask, RadiusMax + 0.5, 8, cm=centroid)")
    for k, v in _CURV.items():
        table[k] = (v[0], v[1], v[2] + "." + _CURV_CONTEXT, v[3])
    return table


def _region_tokens(region: str) -> tuple[str, ...]:
    toks = CORE_NAMES + tuple(_CURV)
    return toks + tuple(_NUC) if region == "Nucleus" else toks


def specs() -> list[FeatureSpec]:
    """Specs of every shape feature, in column order (Nucleus, Cytoplasm, Cell)."""
    table = _feature_table()
    out = []
    for r in REGIONS:
        for tok in _region_tokens(r):
            unit, desc, formula, ref = _NUC[tok] if tok in _NUC else table[tok]
            out.append(FeatureSpec(f"{r}_Shape_{tok}", "shape", r, unit,
                                   desc.format(r=r.lower()), formula, ref))
    return out


# ---- computation -----------------------------------------------------------------------

_MAX_CACHED_PIXELS = 1 << 20


class _Workspace:
    """Kernel buffers for crops up to ``(h, w)``, reused by the three regions and, through
    :meth:`get`, by every later crop of this thread (fresh large arrays would cost an mmap
    and page faults per image)."""

    _local = threading.local()

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self._bufs = K.alloc_workspace(h, w)
        self.lobe = K.alloc_lobe_workspace(h, w)
        self.bufs = self._bufs

    @classmethod
    def get(cls, h: int, w: int) -> _Workspace:
        """This thread's workspace, grown to at least ``(h, w)``, with ``bufs`` set for an
        ``(h, w)`` mask."""
        ws = getattr(cls._local, "ws", None)
        if ws is None or ws.h < h or ws.w < w:
            hh, ww = max(h, ws.h if ws else 0), max(w, ws.w if ws else 0)
            if hh * ww > _MAX_CACHED_PIXELS:  # a huge crop: do not keep its buffers
                ws = cls(h, w)
                ws.fit(h, w)
                return ws
            ws = cls(hh, ww)
            cls._local.ws = ws
        ws.fit(h, w)
        return ws

    def fit(self, h: int, w: int) -> None:
        """Point ``bufs`` at buffers for an ``(h, w)`` mask (the padded border image must
        have exactly that shape)."""
        if h > self.h or w > self.w:  # the kernels do not bounds-check
            raise ValueError(f"workspace for {self.h}x{self.w} masks used on {h}x{w}")
        b = self._bufs
        self.bufs = b[:2] + (b[2][:h + 2, :w + 2],) + b[3:]


def region_features(mask: np.ndarray, ws: _Workspace | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Moment, hull and boundary features of one boolean mask.

    Returns ``(values, aux)``: ``values`` in ``CORE_NAMES`` order (all NaN for an empty
    mask) and ``aux = (N, centroid row, centroid col, Zernike radius)``.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if mask.ndim != 2:
        from ..errors import FeatureError

        raise FeatureError(f"shape features need a 2-D mask, got shape {mask.shape}")
    if ws is None:
        ws = _Workspace.get(*mask.shape)
    else:
        ws.fit(*mask.shape)
    out = np.empty(K.N_CORE)
    aux = np.empty(8)
    K.region_shape(mask, *ws.bufs, K._ZW_RE, K._ZW_IM, K.ZERNIKE_ROWS, out, aux)
    return out, aux


def curvature_features(mask: np.ndarray) -> np.ndarray:
    """``CurvatureMean, CurvatureStd, CurvatureMin, CurvatureMax, ConcaveFraction,
    BendingEnergy`` of the outer contours of ``mask`` (NaN when none is long enough).

    Method (see :func:`morphocell.features._kernels.shape.contour_curvature`): the outer
    contour of every connected component (``cv2.findContours``, ``RETR_EXTERNAL``,
    ``CHAIN_APPROX_NONE``: 8-connected chain of boundary-pixel centres) at least
    ``MIN_CONTOUR_LENGTH`` px long, started at its point farthest from the mean of its
    points, is resampled every ``CURVATURE_STEP`` px of arc length,
    smoothed with a circular Gaussian (``CURVATURE_SIGMA`` px) and differentiated by central
    differences; ``kappa = (x'y'' - y'x'')/(x'^2 + y'^2)^(3/2)``, positive where the
    boundary is convex. Statistics weight every resampled point by its arc length ``ds``.
    """
    import cv2

    u8 = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)
    contours, _ = cv2.findContours(u8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.empty(len(_CURV))
    if not contours:
        out[:] = np.nan
        return out
    lens = [c.shape[0] for c in contours]
    pts = (contours[0] if len(contours) == 1 else np.concatenate(contours)).reshape(-1, 2)
    offsets = np.array([0, *itertools.accumulate(lens)], np.int64)
    buf = np.empty((3, int(1.5 * max(lens) / CURVATURE_STEP) + 8))
    cbuf = np.empty((max(lens), 2))
    K.curvature_contours(pts, offsets, CURVATURE_STEP, CURVATURE_SIGMA, MIN_CONTOUR_LENGTH,
                         cbuf, buf[0], buf[1], buf[2], out)
    return out


def lobe_count(mask: np.ndarray, ws: _Workspace | None = None,
               bbox: tuple[int, int, int, int] | None = None) -> float:
    """Number of lobes of a (nuclear) mask: maxima of its exact Euclidean distance map whose
    persistence is at least ``max(LOBE_MIN_PERSISTENCE, LOBE_REL_PERSISTENCE * max EDT)``.

    A lobe is a thick part joined to the rest by a thinner bridge (or not joined at all):
    its distance-map peak ``b`` and the bridge's half-width ``s`` give persistence
    ``b - s``; separate components have persistence ``b``. Scale-free through the relative
    threshold. ``NaN`` for an empty mask; >= 1 otherwise. ``bbox = (rmin, rmax, cmin,
    cmax)`` of the mask may be given to skip finding it.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if bbox is None:
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return float("nan")
        cols = np.flatnonzero(mask.any(axis=0))
        bbox = (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]))
    if ws is None:
        ws = _Workspace.get(*mask.shape)
    else:
        ws.fit(*mask.shape)
    g, dt2, sbuf, tbuf, order, parent, pers = ws.lobe
    r0, r1, c0, c1 = bbox
    K.edt_sq(mask, r0, r1, c0, c1, g, dt2, sbuf, tbuf)
    hh, ww = r1 - r0 + 3, c1 - c0 + 3
    k = K.lobe_persistence(dt2, hh, ww, order, parent, pers)
    thr = max(LOBE_MIN_PERSISTENCE, LOBE_REL_PERSISTENCE * float(pers[:k].max()))
    return float(np.count_nonzero(pers[:k] >= thr))


def compute(crop: Crop) -> dict[str, float]:
    """Every shape feature of a crop (``{name: value}`` in :data:`NAMES` order)."""
    return as_dict(NAMES, compute_array(crop))


def compute_array(crop: Crop) -> np.ndarray:
    """Every shape feature of a crop as a float64 vector in :data:`NAMES` order: per region
    :func:`region_features`, :func:`curvature_features` and, for the nucleus,
    :func:`lobe_count` and the two nucleus / cell ratios."""
    h, w = crop.nucleus.shape
    ws = _Workspace.get(h, w)
    values = np.empty(len(NAMES))
    aux = {}
    i = 0
    n_curv = len(_CURV)
    for r in REGIONS:
        m = crop.mask(r)
        core, ax = region_features(m, ws)
        aux[r] = ax
        values[i:i + core.size] = core
        i += core.size
        values[i:i + n_curv] = curvature_features(m) if ax[0] > 0 else np.nan
        i += n_curv
        if r == "Nucleus":
            i_nuc = i
            i += len(_NUC)
    an, ac = aux["Nucleus"], aux["Cell"]
    if an[0] > 0 and ac[0] > 0:
        values[i_nuc] = lobe_count(crop.nucleus, ws, tuple(int(v) for v in an[4:8]))
        values[i_nuc + 1] = an[0] / ac[0]
        values[i_nuc + 2] = np.hypot(an[1] - ac[1], an[2] - ac[2]) / np.sqrt(ac[0] / np.pi)
    else:
        values[i_nuc:i_nuc + 3] = np.nan
    return values


#: column names of the shape family, in the order of :func:`compute_array`
NAMES: tuple[str, ...] = tuple(s.name for s in specs())
