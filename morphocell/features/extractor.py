"""Feature extraction for one image (``extract_features``) and many (``FeatureExtractor``).

>>> from morphocell import read_image, extract_features
>>> from morphocell.datasets import sample_paths
>>> row = extract_features(read_image(sample_paths()[0]))
>>> row["Nucleus_Shape_Area"] > 0
True
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .._utils import cv2_one_thread
from ..errors import FeatureError, MorphocellError
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


def _one(source, fams, method):
    """(vector, status, error) for a path or an array; never raises a MorphocellError."""
    from ..io import read_image

    try:
        img = read_image(source) if isinstance(source, (str, os.PathLike)) else source
        vec, masks = extract_array(img, None, fams, method)
        if not masks.found:
            return vec, STATUS_NO_CELL, str(masks.info.get("reason", "no cell found"))
        return vec, STATUS_OK, ""
    except MorphocellError as exc:
        return _error_row(fams, str(exc))


def _error_row(fams, message: str):
    """The (all-NaN vector, status, error) result of an image that could not be measured."""
    return np.full(len(feature_names(fams)), np.nan), STATUS_ERROR, message


def _chunk(sources, fams, method):
    if isinstance(sources, _PackedChunk):
        return sources.run(fams, method)
    return [_one(s, fams, method) for s in sources]


class _PackedChunk:
    """A chunk whose in-memory images travel to a worker process in a file (in ``/dev/shm``
    where it exists and has room) instead of as pickled bytes: the parent writes each image
    once into the chunk's file, the worker reads its images back and removes the file.
    Pickling ~200 KB per image through the pipe cost the parent, which shares the cores with
    the workers, about a tenth of the two-process speed (docs/scale.md, "In-memory images
    and n_jobs"). One file per chunk, written when the chunk is dispatched, so the files hold
    only the chunks in flight."""

    def __init__(self, file: str, items: list):
        self.file = file
        self.items = items  # _ArraySlot for a packed array, else the source itself

    def run(self, fams, method):
        images = {}
        lost = ""
        try:
            with open(self.file, "rb") as fh:
                for j, it in enumerate(self.items):
                    if isinstance(it, _ArraySlot):
                        a = np.empty(it.shape, np.dtype(it.dtype))
                        fh.seek(it.offset)
                        if fh.readinto(memoryview(a).cast("B")) != a.nbytes:
                            raise OSError(f"short read from {self.file}")
                        images[j] = a
        except OSError as exc:  # the batch goes on: these images become error rows
            lost = f"in-memory image lost on its way to the worker process: {exc}"
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.file)
        out = []
        for j, it in enumerate(self.items):
            if isinstance(it, _ArraySlot) and j not in images:
                out.append(_error_row(fams, lost))
            else:
                out.append(_one(images.get(j, it), fams, method))
        return out


class _ArraySlot(NamedTuple):
    """Where one image lies in a :class:`_PackedChunk`'s file."""

    offset: int
    shape: tuple
    dtype: str


def _chunk_dir(nbytes: int) -> str | None:
    """``/dev/shm`` when it exists, is writable and has room for many chunks of ``nbytes``
    (containers often give it only 64 MB), else None (the default temporary folder)."""
    d = "/dev/shm"
    try:
        st = os.statvfs(d)
    except (OSError, AttributeError):
        return None
    return d if os.access(d, os.W_OK) and st.f_bavail * st.f_frsize >= 16 * nbytes else None


def _pack_chunk(chunk: list, files: list):
    """``chunk`` as a :class:`_PackedChunk` when it holds numpy images (the file's name is
    appended to ``files`` for the caller's clean-up), else ``chunk`` unchanged -- also when
    the file cannot be written (no room: the images are then pickled as before)."""
    import tempfile

    idx = [j for j, s in enumerate(chunk)
           if isinstance(s, np.ndarray) and s.dtype != object and s.size]
    if not idx:
        return chunk
    arrays = {j: np.ascontiguousarray(chunk[j]) for j in idx}
    total = sum(a.nbytes for a in arrays.values())
    fd, path = tempfile.mkstemp(prefix="morphocell-chunk-", suffix=".bin", dir=_chunk_dir(total))
    items = list(chunk)
    try:
        with os.fdopen(fd, "wb") as fh:
            off = 0
            for j, a in arrays.items():
                fh.write(memoryview(a).cast("B"))
                items[j] = _ArraySlot(off, a.shape, a.dtype.str)
                off += a.nbytes
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return chunk
    files.append(path)
    return _PackedChunk(path, items)


#: with several workers, :func:`extract_batch` cuts a batch into at least this many chunks per
#: worker (smaller chunks than ``chunk_size`` when the batch is small)
TAIL_CHUNKS_PER_WORKER = 16


def _batch_chunk_size(n: int, chunk_size: int, n_jobs) -> int:
    """``chunk_size``, made smaller for a small batch on several workers so that each worker
    gets at least ``TAIL_CHUNKS_PER_WORKER`` chunks: the last chunk to finish then leaves the
    other workers idle for a small share of the run (500 images in chunks of 32 on 2
    workers: up to 1/8 of it; in chunks of 16: 1/16)."""
    if n_jobs in (None, 1):
        return chunk_size
    from joblib import effective_n_jobs

    per = -(-n // (TAIL_CHUNKS_PER_WORKER * max(effective_n_jobs(n_jobs), 1)))
    return max(1, min(chunk_size, per))


def extract_batch(sources: Sequence, families=None, method: str = "otsu", n_jobs=None,
                  verbose: int = 0, chunk_size: int = 32):
    """Features of many images (paths or arrays).

    Returns ``(matrix, statuses, errors)``: an ``(n, n_features)`` float64 array (NaN rows for
    failed images), and per image a status (``ok`` / ``no_cell`` / ``error``) and an error
    message. A bad image never stops the batch.
    """
    from joblib import Parallel, delayed

    from .._utils import progress

    fams = _families(families)
    n_feat = len(feature_names(fams))
    sources = list(sources)
    chunk_size = _batch_chunk_size(len(sources), chunk_size, n_jobs)
    chunks = [sources[i:i + chunk_size] for i in range(0, len(sources), chunk_size)]
    if n_jobs in (None, 1) or len(chunks) <= 1:
        results = [_chunk(c, fams, method)
                   for c in progress(chunks, desc="features", verbose=verbose, unit="chunk")]
    else:
        from .._warmup import compile_kernels

        # a fresh install: compile the families side by side once instead of every worker
        # compiling all of them (no-op when the on-disk kernel cache is warm)
        compile_kernels(n_jobs)
        import threading

        # chunk files in shared memory, written as joblib dispatches each chunk (possibly from
        # its callback thread); workers remove theirs, the rest go here, and once the batch is
        # over (or failed) no new file is written
        files: list[str] = []
        lock = threading.Lock()
        over = threading.Event()

        def tasks():
            for c in chunks:
                with lock:
                    if over.is_set():
                        return
                    packed = _pack_chunk(c, files)
                yield delayed(_chunk)(packed, fams, method)

        try:
            gen = Parallel(n_jobs=n_jobs, return_as="generator")(tasks())
            results = list(progress(gen, total=len(chunks), desc="features", verbose=verbose,
                                    unit="chunk"))
        finally:
            with lock:
                over.set()
                for f in files:
                    with contextlib.suppress(OSError):
                        os.unlink(f)
    flat = [r for chunk in results for r in chunk]
    mat = np.vstack([r[0] for r in flat]) if flat else np.empty((0, n_feat))
    return mat, [r[1] for r in flat], [r[2] for r in flat]


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

    def __init__(self, families=DEFAULT_FAMILIES, method="otsu", n_jobs=None, verbose=0):
        self.families = families
        self.method = method
        self.n_jobs = n_jobs
        self.verbose = verbose

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
        mat, statuses, errors = extract_batch(sources, self.families, self.method, self.n_jobs,
                                              self.verbose)
        df = pd.DataFrame(mat, columns=list(self.feature_names_out_))
        df.attrs["failures"] = [
            (_describe(s), st, e) for s, st, e in zip(sources, statuses, errors, strict=True)
            if st != STATUS_OK]
        return df

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
