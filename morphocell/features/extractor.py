"""Feature extraction for one image (``extract_features``) and many (``FeatureExtractor``).

>>> from morphocell import read_image, extract_features
>>> from morphocell.datasets import sample_paths
>>> row = extract_features(read_image(sample_paths()[0]))
>>> row["Nucleus_Shape_Area"] > 0
True
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .._utils import cv2_one_thread
from ..batch.engine import extract_batch
from ..errors import FeatureError
from ..segmentation.masks import CellMasks
from . import registry
from .base import FeatureFamily, make_crop

__all__ = ["DEFAULT_FAMILIES", "feature_names", "extract_features", "extract_array",
           "extract_batch", "FeatureExtractor", "STATUS_OK", "STATUS_NO_CELL", "STATUS_ERROR"]

DEFAULT_FAMILIES = ("shape", "color", "texture")
STATUS_OK, STATUS_NO_CELL, STATUS_ERROR = "ok", "no_cell", "error"


def _families(families) -> tuple[str, ...]:
    if families is None:
        return DEFAULT_FAMILIES
    if isinstance(families, str):
        families = (families,)
    fams = tuple(families)
    _names(fams)  # validates the names (cached)
    return fams


@lru_cache(maxsize=64)
def _names(fams: tuple[str, ...]) -> tuple[str, ...]:
    # the registry is fixed once its family modules are loaded (cached: a list comprehension
    # over its ~700 specs per image would cost ~0.25 ms)
    return tuple(registry.names(fams))


def feature_names(families=None) -> list[str]:
    """Column names produced for ``families`` (default: shape, color, texture)."""
    return list(_names(_families(families)))


@lru_cache(maxsize=64)
def _modules(fams: tuple[str, ...]) -> tuple[FeatureFamily, ...]:
    """The family modules of ``fams``, each checked against :class:`.base.FeatureFamily`."""
    import importlib

    mods = tuple(importlib.import_module(f"morphocell.features.{f}") for f in fams)
    for f, mod in zip(fams, mods, strict=True):
        if not isinstance(mod, FeatureFamily):
            raise FeatureError(f"feature family {f!r} ({mod.__name__}) lacks NAMES, specs, "
                               "compute_array or compute")
    return mods


@lru_cache(maxsize=64)
def _layout(fams: tuple[str, ...]) -> tuple[np.ndarray, int]:
    """Index of each of :func:`feature_names` (the registry's order) in the concatenation of
    the family modules' ``compute_array`` vectors (their ``NAMES``), and that vector's length.
    Every registered name must be computed by a family and every computed one registered."""
    cat = [n for mod in _modules(fams) for n in mod.NAMES]
    pos = {n: i for i, n in enumerate(cat)}
    names = _names(fams)
    missing = [n for n in names if n not in pos]
    if missing:
        raise FeatureError(f"{len(missing)} registered feature(s) computed by no family "
                           f"of {list(fams)}: {missing[:5]}")
    extra = sorted(set(cat) - set(names))
    if extra or len(pos) != len(cat):
        raise FeatureError(f"family output not registered once each: {extra[:5]} "
                           f"({len(cat)} columns, {len(pos)} distinct)")
    idx = np.array([pos[n] for n in names], dtype=np.intp)
    idx.setflags(write=False)
    return idx, len(cat)


@cv2_one_thread()
def extract_array(image: np.ndarray, masks: CellMasks | None = None, families=None,
                  method: str = "otsu") -> tuple[np.ndarray, CellMasks]:
    """Features of one image as a float64 vector in :func:`feature_names` order.

    A cell that is not found gives an all-NaN vector (``masks.found`` is ``False``).
    """
    from ..io import validate_image
    from ..segmentation import segment

    fams = _families(families)
    img = validate_image(image)
    if masks is None:
        masks = segment(img, method=method)
    elif masks.shape != img.shape[:2]:
        raise FeatureError(f"masks of shape {masks.shape} do not match image {img.shape[:2]}")
    names = _names(fams)
    if not (masks.nucleus.any() or masks.cytoplasm.any()):
        return np.full(len(names), np.nan), masks
    crop = make_crop(img, masks)
    idx, n_cat = _layout(fams)
    vec = np.concatenate([mod.compute_array(crop) for mod in _modules(fams)])
    if vec.size != n_cat:
        raise FeatureError(f"the families {list(fams)} computed {vec.size} values for "
                           f"{n_cat} names")
    return vec[idx], masks


def extract_features(image: np.ndarray, masks: CellMasks | None = None, families=None,
                     method: str = "otsu") -> dict[str, float]:
    """Features of one image, ``{name: value}`` in the stable column order.

    Parameters
    ----------
    image : ndarray (H, W, 3) uint8
    masks : CellMasks, optional
        Segmentation to measure; computed with ``segment(image, method)`` when omitted.
    families : iterable of {"shape", "color", "texture"}, optional
        Default: all three.
    """
    vec, _ = extract_array(image, masks, families, method)
    return dict(zip(feature_names(families), vec.tolist(), strict=True))


class FeatureExtractor(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: images (paths or arrays) -> hand-crafted feature table.

    Parameters
    ----------
    families : tuple of str, default ("shape", "color", "texture")
        Feature families to compute (see :mod:`morphocell.features.registry`).
    method : {"otsu", "unet"}, default "otsu"
        Segmentation method used for each image.
    n_jobs : int, optional
        Worker processes (joblib); ``None`` or 1 runs in this process.
    verbose : int, default 0
        Show a progress bar (on a terminal) when > 0.
    cache_dir : path, optional
        Folder of a feature cache (:class:`morphocell.batch.FeatureCache`): image files
        whose content was measured before (with the same families, method and morphocell
        code) are read from it, the others are measured and added. A cross-validation over a
        Pipeline that starts with this transformer then measures each image once, not once
        per fold. In-memory images are always measured. ``None`` (default): no cache.

    Images that fail (unreadable, no cell) give NaN rows; their paths and reasons are in
    ``transform``'s output ``DataFrame.attrs["failures"]``.

    Examples
    --------
    >>> from morphocell import FeatureExtractor
    >>> from morphocell.datasets import sample_paths
    >>> X = FeatureExtractor().fit_transform(sample_paths()[:2])
    >>> X.shape[0], "Cell_Shape_Area" in X.columns
    (2, True)
    """

    def __init__(self, families=DEFAULT_FAMILIES, method="otsu", n_jobs=None, verbose=0,
                 cache_dir=None):
        self.families = families
        self.method = method
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.cache_dir = cache_dir

    def __setstate__(self, state):
        # extractors saved before ``cache_dir`` existed measure without a cache, as they did
        state.setdefault("cache_dir", None)
        super().__setstate__(state)

    def fit(self, X=None, y=None):
        """Validate parameters and fix the output columns; learns nothing from ``X``."""
        self.feature_names_out_ = np.asarray(feature_names(self.families), dtype=object)
        self.n_features_out_ = len(self.feature_names_out_)
        return self

    def transform(self, X):
        """Return a DataFrame with one row per image and one column per feature."""
        import pandas as pd
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "feature_names_out_")
        sources = _as_sources(X)
        if self.cache_dir is None:
            mat, statuses, errors = extract_batch(sources, self.families, self.method,
                                                  self.n_jobs, self.verbose)
        else:
            mat, statuses, errors = self._from_cache(sources)
        df = pd.DataFrame(mat, columns=list(self.feature_names_out_))
        df.attrs["failures"] = [
            (_describe(s), st, e) for s, st, e in zip(sources, statuses, errors, strict=True)
            if st != STATUS_OK]
        return df

    def _from_cache(self, sources: list):
        """:meth:`transform`'s rows with the feature cache: files through the cache, in-memory
        images measured."""
        from ..batch.cache import FeatureCache

        files = [i for i, s in enumerate(sources) if isinstance(s, (str, os.PathLike))]
        arrays = [i for i in range(len(sources)) if i not in set(files)]
        mat = np.full((len(sources), len(self.feature_names_out_)), np.nan)
        statuses, errors = [""] * len(sources), [""] * len(sources)
        if files:
            cache = FeatureCache(self.cache_dir, self.families, self.method)
            X, st, er = cache.extract([sources[i] for i in files], n_jobs=self.n_jobs,
                                      verbose=self.verbose)
            mat[files] = X.to_numpy(dtype=np.float64)
            for k, i in enumerate(files):
                statuses[i], errors[i] = st[k], er[k]
        if arrays:
            m, st, er = extract_batch([sources[i] for i in arrays], self.families, self.method,
                                      self.n_jobs, self.verbose)
            mat[arrays] = m
            for k, i in enumerate(arrays):
                statuses[i], errors[i] = st[k], er[k]
        return mat, statuses, errors

    def get_feature_names_out(self, input_features=None):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        return tags


def _as_sources(X) -> list:
    import pandas as pd

    if isinstance(X, (str, os.PathLike)):
        return [X]
    if isinstance(X, pd.DataFrame):
        if "path" not in X.columns:
            raise FeatureError("a DataFrame input needs a 'path' column")
        return X["path"].tolist()
    if isinstance(X, pd.Series):
        return X.tolist()
    if isinstance(X, np.ndarray) and X.ndim == 4:
        return list(X)
    if isinstance(X, np.ndarray) and X.ndim == 3 and X.shape[-1] in (3, 4):
        return [X]
    if isinstance(X, np.ndarray):
        return X.ravel().tolist()
    return list(X)


def _describe(s) -> str:
    return os.fspath(s) if isinstance(s, (str, os.PathLike)) else f"<array {np.shape(s)}>"
