"""Reading a predictions table for the review page; the Wilson interval of a count."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError

#: two-sided 95% normal quantile used by :func:`wilson_interval`
Z95 = 1.959963984540054

#: columns of ``morphocell predict`` that start with ``p_`` but are not a class probability
_NOT_CLASS = {"p_atypical"}


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (default: 95%).

    :math:`\\frac{\\hat p + z^2/2n \\pm z\\sqrt{\\hat p(1-\\hat p)/n + z^2/4n^2}}{1 + z^2/n}`
    (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the Wald interval for the
    small counts of a differential). Returns ``(nan, nan)`` when ``n == 0``.

    >>> lo, hi = wilson_interval(5, 100)
    >>> round(lo, 4), round(hi, 4)
    (0.0215, 0.1118)
    """
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"count {k} outside 0..{n}")
    p = k / n
    z2 = z * z
    den = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class Predictions:
    """A predictions table as the review page reads it.

    Attributes
    ----------
    frame : pandas.DataFrame
        One row per image, in the file's order, with at least ``path``, ``predicted``
        (``""`` for an image that was not classified), the ``p_<class>`` columns,
        ``needs_review`` and ``unlike_training`` (bool; ``False`` when the file has no such
        column), ``p_atypical``, ``status`` and ``error``.
    classes : list of str
        The classes, in the order of the ``p_<class>`` columns.
    source : Path or None
        The CSV file read (``None`` for a DataFrame given directly).
    has_review, has_unlike : bool
        Whether the table had ``needs_review`` / ``unlike_training`` columns.
    """

    frame: object
    classes: list[str]
    source: Path | None = None
    has_review: bool = False
    has_unlike: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def proba(self) -> np.ndarray:
        return self.frame[[f"p_{c}" for c in self.classes]].to_numpy(dtype=np.float64)


def _as_bool(col) -> np.ndarray:
    import pandas as pd

    if col.dtype == bool:
        return col.to_numpy()
    s = col.astype(str).str.strip().str.lower()
    return s.isin(["true", "1", "yes", "1.0"]).to_numpy() & ~pd.isna(col).to_numpy(bool)


def read_predictions(predictions, *, source=None) -> Predictions:
    """Read and check a predictions table written by ``morphocell predict``.

    Parameters
    ----------
    predictions : str, PathLike or pandas.DataFrame
        The CSV file (``path``, ``predicted``, ``p_<class>`` ..., optional ``needs_review``,
        ``unlike_training``, ``p_atypical``, ``status``, ``error``) or the same table.

    Raises
    ------
    DataError
        If the file is missing, empty, not a CSV, has no ``path`` column, or has no class
        probability column (``p_<class>``).
    """
    import pandas as pd

    src = None
    if isinstance(predictions, pd.DataFrame):
        df = predictions.copy()
        name = "the predictions table"
        src = Path(source) if source is not None else None
    else:
        src = Path(predictions)
        name = str(src)
        if not src.exists():
            raise DataError("predictions file not found", src)
        if src.is_dir():
            raise DataError("is a folder, not a predictions CSV file", src)
        if src.stat().st_size == 0:
            raise DataError("predictions file is empty (0 bytes)", src)
        try:
            # every column as text: file names such as "nan" or "True" stay what they are
            df = pd.read_csv(src, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        except pd.errors.EmptyDataError:
            raise DataError("predictions file is empty (no header)", src) from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"not a readable predictions CSV ({type(exc).__name__})",
                            src) from None
    from ..io.listing import _unescape

    # undo the quote that morphocell's CSV writer puts before text a spreadsheet would run
    df.columns = [_unescape(str(c).strip()) for c in df.columns]
    for col in ("path", "predicted", "status", "error"):
        if col in df.columns and df[col].dtype == object:
            df[col] = [_unescape(v) if isinstance(v, str) else v for v in df[col]]
    where = src if src is not None else None
    if "path" not in df.columns:
        raise DataError(f"{name} has no 'path' column (found: {list(df.columns)[:8]}); "
                        "expected the CSV written by 'morphocell predict'", where)
    classes = [c[2:] for c in df.columns if c.startswith("p_") and c not in _NOT_CLASS
               and len(c) > 2]
    if not classes:
        raise DataError(f"{name} has no class probability columns (p_<class>); expected the "
                        "CSV written by 'morphocell predict'", where)
    if len(df) == 0:
        raise DataError(f"{name} lists no images (header only)", where)
    df = df.reset_index(drop=True)
    df["path"] = df["path"].astype(str)
    for c in classes:
        df[f"p_{c}"] = pd.to_numeric(df[f"p_{c}"], errors="coerce")
    proba = df[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)
    finite = np.isfinite(proba).any(axis=1)
    if "status" in df.columns:
        status = df["status"].astype(str).str.strip().replace({"": "ok", "nan": "ok"})
        status = np.where(finite, status, np.where(status == "ok", "error", status))
    else:
        status = np.where(finite, "ok", "error")
    df["status"] = status
    df["error"] = (df["error"].astype(str).replace({"nan": ""}) if "error" in df.columns
                   else "")
    ok = df["status"].to_numpy() == "ok"
    arg = np.asarray(classes, dtype=object)[
        np.argmax(np.nan_to_num(proba, nan=-np.inf), axis=1)]
    if "predicted" in df.columns:
        pred = df["predicted"].astype(str).str.strip().replace({"nan": ""}).to_numpy(object)
        bad = ok & ~np.isin(pred, classes)
        pred[bad] = arg[bad]  # a blank or unknown prediction: the arg-max class
    else:
        pred = arg
    pred = np.where(ok, pred, "")
    df["predicted"] = pred
    has_review = "needs_review" in df.columns
    has_unlike = "unlike_training" in df.columns
    df["needs_review"] = _as_bool(df["needs_review"]) & ok if has_review else False
    df["unlike_training"] = _as_bool(df["unlike_training"]) & ok if has_unlike else False
    if "p_atypical" in df.columns:
        df["p_atypical"] = pd.to_numeric(df["p_atypical"], errors="coerce")
    else:
        df["p_atypical"] = np.nan
    return Predictions(df, classes, src, has_review, has_unlike)


def resolve_image(path: str, csv_dir: Path | None, base_dir: Path | None) -> Path:
    """Where an image listed in a predictions table lies on disk.

    An absolute path is itself. A relative path is taken relative to ``base_dir`` when given;
    otherwise relative to the working folder (``morphocell predict`` writes the paths as it
    was given them) and, when no file is there, relative to the CSV's folder (the manifest
    convention of :func:`morphocell.io.load_manifest`).
    """
    p = Path(path)
    if p.is_absolute():
        return p
    if base_dir is not None:
        return Path(os.path.abspath(base_dir / p))
    here = Path(os.path.abspath(p))
    if here.exists() or csv_dir is None:
        return here
    there = Path(os.path.abspath(csv_dir / p))
    return there if there.exists() else here
