"""A feature cache on disk, so that training twice on the same images computes nothing twice.

Images not yet in the cache are measured by the batch engine
(:func:`~morphocell.features.extractor.extract_batch`, :mod:`morphocell.batch.engine`).

One Parquet file per *configuration*: ``features-<key>.parquet`` in the cache folder, with

.. math:: key = \\mathrm{SHA256}(\\text{morphocell version},\\ \\text{families},\\
          \\text{segmentation method},\\ \\text{feature columns},\\ \\text{code})[:16]

(``code``: :func:`code_fingerprint`, a hash of the feature and segmentation source files)

and one row per distinct image *content*: ``image_sha256`` (SHA-256 of the file's bytes),
``status``, ``error`` and every feature column. The key makes a new morphocell version, other
families or another segmentation start a fresh table; the content hash makes renamed or copied
images hit and edited images miss. Unreadable files (missing, permission denied) are never
cached; corrupt files are cached with their error (the same bytes give the same error).

>>> import tempfile
>>> from morphocell.datasets import sample_paths
>>> cache = FeatureCache(tempfile.mkdtemp(), families=("shape",))
>>> X, status, errors = cache.extract(sample_paths()[:2])
>>> cache.last_stats["computed"], cache.extract(sample_paths()[:2]) and cache.last_stats["hits"]
(2, 2)
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._version import __version__

__all__ = ["FeatureCache", "code_fingerprint", "compute_features", "default_cache_dir",
           "image_sha256"]


def default_cache_dir() -> Path:
    """``$MORPHOCELL_CACHE`` if set, else ``$XDG_CACHE_HOME/morphocell`` or
    ``~/.cache/morphocell``."""
    env = os.environ.get("MORPHOCELL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "morphocell"


def code_fingerprint(method: str = "otsu") -> str:
    """SHA-256 of the source of the segmentation and feature code (``morphocell/features``
    and ``morphocell/segmentation``, ``*.py`` files): a change to how features are computed
    starts a fresh cache even before the version number changes. The U-Net's code and its
    bundled weights count only for ``method="unet"``."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for sub in ("features", "segmentation"):
        for f in sorted((root / sub).rglob("*.py")):
            if f.name == "unet.py" and method != "unet":
                continue
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    if method == "unet":
        from ..segmentation.unet import BUNDLED_WEIGHTS

        if BUNDLED_WEIGHTS.is_file():
            h.update(BUNDLED_WEIGHTS.read_bytes())
    return h.hexdigest()


def image_sha256(path: str | os.PathLike) -> str | None:
    """Hex SHA-256 of a file's bytes, or ``None`` when the file cannot be read."""
    from .._utils import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None


class FeatureCache:
    """Hand-crafted features of image files, cached by content hash.

    Parameters
    ----------
    cache_dir : path
        Folder of the Parquet tables (created on first write).
    families : sequence of str
        Feature families (as in :class:`~morphocell.features.extractor.FeatureExtractor`).
    method : str
        Segmentation method.
    write_every : int
        New rows are written to disk after every ``write_every`` computed images.

    Attributes
    ----------
    last_stats : dict
        After :meth:`extract`: ``hits`` (rows found in the cache), ``computed`` (images whose
        features were computed now), ``uncached`` (unreadable files, not cached).
    """

    def __init__(self, cache_dir: str | os.PathLike, families: Sequence[str] | None = None,
                 method: str = "otsu", write_every: int = 2048):
        from ..features.extractor import _families, feature_names

        self.cache_dir = Path(cache_dir)
        self.families = _families(families)
        self.method = method
        self.write_every = max(1, int(write_every))
        self.columns = feature_names(self.families)
        cfg = json.dumps({"morphocell": __version__, "families": list(self.families),
                          "method": method, "columns": self.columns,
                          "code": code_fingerprint(method)}, sort_keys=True)
        self.key = hashlib.sha256(cfg.encode()).hexdigest()[:16]
        self.path = self.cache_dir / f"features-{self.key}.parquet"
        self.last_stats = {"hits": 0, "computed": 0, "uncached": 0}

    def _read(self):
        import pandas as pd

        if not self.path.is_file():
            return pd.DataFrame(columns=["image_sha256", "status", "error", *self.columns])
        try:
            df = pd.read_parquet(self.path)
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            return pd.DataFrame(columns=["image_sha256", "status", "error", *self.columns])
        if list(df.columns) != ["image_sha256", "status", "error", *self.columns]:
            return pd.DataFrame(columns=["image_sha256", "status", "error", *self.columns])
        return df

    def _write(self, new):
        import pandas as pd

        from .._utils import atomic_path

        old = self._read()  # re-read: another process may have added rows meanwhile
        both = new if old.empty else pd.concat([old, new], ignore_index=True)
        both = both.drop_duplicates("image_sha256", keep="last").reset_index(drop=True)
        with atomic_path(self.path) as tmp:
            both.to_parquet(tmp, index=False)

    def extract(self, paths: Sequence[str | os.PathLike], n_jobs=None, verbose: int = 0):
        """Features of image files, from the cache where possible.

        Returns
        -------
        (X, statuses, errors)
            ``X`` a DataFrame (one row per path, in order, NaN rows for failures, columns
            :func:`~morphocell.features.extractor.feature_names`), per image a status
            (``ok`` / ``no_cell`` / ``error``) and an error message.
        """
        import pandas as pd

        from .._utils import progress
        from ..features import extractor

        paths = [os.fspath(p) for p in paths]
        hashes = [image_sha256(p) for p in progress(paths, desc="hash", verbose=verbose)]
        table = self._read()
        known = {h: i for i, h in enumerate(table["image_sha256"].tolist())}
        todo: dict[str, str] = {}  # hash -> first path with that content
        for p, h in zip(paths, hashes, strict=True):
            if h is not None and h not in known and h not in todo:
                todo[h] = p
        n_feat = len(self.columns)
        if todo:
            items = list(todo.items())
            parts = [] if table.empty else [table]
            # written every `write_every` images: an interrupted run keeps what it computed
            for k in range(0, len(items), self.write_every):
                chunk = items[k:k + self.write_every]
                mat, st, er = extractor.extract_batch([p for _, p in chunk], self.families,
                                                      self.method, n_jobs, verbose)
                new_rows = pd.DataFrame(mat, columns=self.columns)
                new_rows.insert(0, "error", er)
                new_rows.insert(0, "status", st)
                new_rows.insert(0, "image_sha256", [h for h, _ in chunk])
                self._write(new_rows)
                parts.append(new_rows)
            table = pd.concat(parts, ignore_index=True)
            known = {h: i for i, h in enumerate(table["image_sha256"].tolist())}
        feats = table[self.columns].to_numpy(dtype=np.float64) if len(table) else np.empty(
            (0, n_feat))
        t_status = table["status"].tolist()
        t_error = table["error"].tolist()
        X = np.full((len(paths), n_feat), np.nan)
        statuses, errors = [], []
        uncached = 0
        for i, (p, h) in enumerate(zip(paths, hashes, strict=True)):
            if h is None:
                from ..errors import ImageReadError

                msg = str(ImageReadError("file not found" if not os.path.exists(p)
                                         else "could not be read", p))
                statuses.append(extractor.STATUS_ERROR)
                errors.append(msg)
                uncached += 1
                continue
            j = known[h]
            X[i] = feats[j]
            statuses.append(t_status[j])
            err = t_error[j] or ""
            errors.append(err if t_status[j] == extractor.STATUS_OK or p in err or not err
                          else f"{p}: {err.split(': ', 1)[-1]}")
        self.last_stats = {"hits": len(paths) - uncached - len(todo), "computed": len(todo),
                           "uncached": uncached}
        return pd.DataFrame(X, columns=self.columns), statuses, errors


def compute_features(paths: Sequence[str], families=None, method: str = "otsu",
                     cache_dir: str | os.PathLike | None = None, n_jobs=None, verbose: int = 0):
    """Hand-crafted features of image files, through the cache when ``cache_dir`` is given.

    Parameters
    ----------
    paths : sequence of path
    families, method
        As in :func:`~morphocell.features.extractor.extract_features`.
    cache_dir : path, optional
        Folder of a :class:`FeatureCache` (used and filled); ``None``: no cache.
    n_jobs, verbose
        As in :func:`~morphocell.features.extractor.extract_batch`.

    Returns
    -------
    (X, statuses, errors, stats)
        ``X`` a DataFrame (one row per path, in order, NaN rows for failures, columns
        :func:`~morphocell.features.extractor.feature_names`), per image a status and an error
        message, and ``stats``: how many rows came from the cache (``hits``), were
        ``computed`` now, or are ``uncached``.
    """
    import pandas as pd

    from ..features import extractor

    if cache_dir is not None:
        cache = FeatureCache(cache_dir, families, method)
        X, st, er = cache.extract(paths, n_jobs=n_jobs, verbose=verbose)
        return X, st, er, dict(cache.last_stats)
    mat, st, er = extractor.extract_batch(list(paths), families, method, n_jobs, verbose)
    X = pd.DataFrame(mat, columns=extractor.feature_names(families))
    return X, st, er, {"hits": 0, "computed": len(paths), "uncached": len(paths)}
