"""Column groups for early and late fusion of hand-crafted and deep features.

A *feature group* names a subset of the columns of a feature table. The same
:class:`~morphocell.ensembles.stacking.StackedCellClassifier` does

* **early fusion** (``feature_groups=None``): every base learner sees every column;
* **late fusion** (``feature_groups={"handcrafted": ..., "deep": ...}``): one base learner of
  each kind *per group*, each seeing only its group's columns; the meta-learner fuses their
  out-of-fold probabilities.

A group is given as

* a list of column names (or of integer positions),
* or one string, used as a regular expression matched at the *start* of each column name
  (:func:`re.match`): a plain prefix such as ``"Cell_Embedding_"`` is therefore a prefix match,
  and ``r"^(?!.*_Embedding_)"`` selects every column that is not an embedding.

>>> resolve_groups({"hc": HANDCRAFTED, "deep": DEEP},
...                ["Cell_Shape_Area", "Cell_Embedding_Cnn_0000", "Nucleus_Color_Mean_R"])
[('hc', array([0, 2])), ('deep', array([1]))]
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import FeatureError

__all__ = ["HANDCRAFTED", "DEEP", "LATE_FUSION", "select_columns", "resolve_groups"]

#: Every column that is not a CNN embedding (shape, colour, texture features).
HANDCRAFTED = r"^(?!.*_Embedding_)"
#: Every CNN-embedding column (``{Region}_Embedding_...``).
DEEP = r"^.*_Embedding_"
#: The late-fusion grouping used by ``morphocell train --features fused``.
LATE_FUSION = {"handcrafted": HANDCRAFTED, "deep": DEEP}


def select_columns(columns: Sequence[str], spec) -> np.ndarray:
    """Integer positions of the columns selected by ``spec`` (in column order).

    Parameters
    ----------
    columns : sequence of str
        Column names of the feature table.
    spec : str or sequence of str or sequence of int
        A regular expression matched at the start of each name, or explicit names/positions.

    Raises
    ------
    FeatureError
        If ``spec`` names unknown columns, is an invalid regex, or selects nothing.
    """
    columns = [str(c) for c in columns]
    if isinstance(spec, str):
        try:
            rx = re.compile(spec)
        except re.error as exc:
            raise FeatureError(f"invalid column pattern {spec!r}: {exc}") from None
        idx = [i for i, c in enumerate(columns) if rx.match(c)]
    else:
        items = list(spec)
        if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in items):
            bad = [i for i in items if not -len(columns) <= int(i) < len(columns)]
            if bad:
                raise FeatureError(f"column positions {bad} out of range for "
                                   f"{len(columns)} columns")
            idx = sorted({int(i) % len(columns) for i in items})
        else:
            pos = {c: i for i, c in enumerate(columns)}
            missing = [str(i) for i in items if str(i) not in pos]
            if missing:
                raise FeatureError(f"unknown feature columns {missing[:5]}"
                                   + (" ..." if len(missing) > 5 else ""))
            idx = sorted({pos[str(i)] for i in items})
    if not idx:
        raise FeatureError(f"feature group {spec!r} selects no column "
                           f"(first columns: {columns[:3]})")
    return np.asarray(idx, dtype=np.intp)


def resolve_groups(feature_groups: Mapping | None,
                   columns: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """``[(group name, column positions)]``; ``None`` means one group ``"all"`` of every column."""
    if feature_groups is None:
        return [("all", np.arange(len(columns), dtype=np.intp))]
    if not isinstance(feature_groups, Mapping) or not feature_groups:
        raise FeatureError("feature_groups must be None or a non-empty dict "
                           "{group name: column names, prefix or regex}")
    out = []
    for name, spec in feature_groups.items():
        if not isinstance(name, str) or not name or "__" in name:
            raise FeatureError(f"bad feature group name {name!r}")
        out.append((name, select_columns(columns, spec)))
    return out
