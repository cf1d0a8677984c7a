"""Differential counts, atypical-cell probability, evaluation metrics and plots.

Definitions
-----------
* probability of an atypical cell (a class that should not be in normal peripheral blood):
  :math:`p_{atyp}(x) = \\sum_{c \\in A} p(c \\mid x)` over the atypical classes :math:`A`;
* differential count over the :math:`N` successfully classified cells:
  :math:`n_c = \\#\\{i : \\hat y_i = c\\}`, :math:`\\%_c = 100\\, n_c / N`;
* as hematology analysers report it: the **WBC differential** per 100 leukocytes,
  :math:`100\\, n_c / N_{WBC}` over the white-cell classes (every class except platelets and
  erythroblasts, :data:`PLATELET_CLASSES`, :data:`NRBC_CLASSES`), **nucleated red cells**
  (erythroblasts) per 100 WBC, :math:`100\\, n_{NRBC} / N_{WBC}`, and **platelets** counted
  apart;
* accuracy :math:`\\frac{1}{n}\\sum_i [\\hat y_i = y_i]`; balanced accuracy = mean per-class
  recall; macro-F1 = unweighted mean over classes of :math:`F1_c = 2 P_c R_c / (P_c + R_c)`;
  ROC AUC per class: one-vs-rest, the probability of class ``c`` as score.

>>> d = differential_count(["neutrophil", "ig", "neutrophil", None], ["ig", "neutrophil"],
...                        atypical_classes=["ig"])
>>> d["counts"], d["percent"]["neutrophil"], d["flagged"], d["n_failed"]
({'ig': 1, 'neutrophil': 2}, 66.67, ['ig'], 1)
>>> d = differential_count(["neutrophil", "erythroblast", "platelet", "lymphocyte"],
...                        ["erythroblast", "lymphocyte", "neutrophil", "platelet"])
>>> d["wbc"]["percent"], d["nrbc_per_100_wbc"], d["n_platelets"]
({'lymphocyte': 50.0, 'neutrophil': 50.0}, 50.0, 1)
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DISPLAY_NAMES",
    "NRBC_CLASSES",
    "PLATELET_CLASSES",
    "REVIEW_ACCURACY",
    "atypical_probability",
    "classification_metrics",
    "differential_count",
    "display_name",
    "final_classifier",
    "format_differential",
    "format_metrics",
    "json_text",
    "most_confused",
    "plot_confusion_matrix",
    "plot_review_curve",
    "plot_top_features",
    "plural",
    "review_curve",
    "review_excess",
    "review_threshold",
    "top_features_table",
    "write_explanation",
    "write_json",
]


def atypical_probability(proba: np.ndarray, classes: Sequence[str],
                         atypical_classes: Sequence[str]) -> np.ndarray:
    """:math:`p_{atyp} = \\sum_{c \\in A} p_c` per row (0 when no class is atypical)."""
    proba = np.asarray(proba, dtype=np.float64)
    idx = [i for i, c in enumerate(classes) if str(c) in set(map(str, atypical_classes))]
    if not idx:
        return np.zeros(proba.shape[0])
    return proba[:, idx].sum(axis=1)


#: Class names (lower case) counted as platelets: reported apart, outside the WBC differential.
PLATELET_CLASSES = ("platelet", "platelets", "thrombocyte", "thrombocytes")
#: Class names (lower case) counted as nucleated red cells: reported per 100 WBC.
NRBC_CLASSES = ("erythroblast", "erythroblasts", "nrbc")
#: How class names are spelled out in printed tables (files keep the class names).
DISPLAY_NAMES = {"ig": "immature granulocytes (ig)"}


def display_name(c) -> str:
    """The name of class ``c`` in human output: ``"ig"`` -> ``"immature granulocytes
    (ig)"``; other names unchanged."""
    return DISPLAY_NAMES.get(str(c), str(c))


def differential_count(predicted: Sequence[str | None], classes: Sequence[str],
                       atypical_classes: Sequence[str] = (), p_atypical=None) -> dict:
    """Count and percentage per class over the successfully classified cells.

    Parameters
    ----------
    predicted : sequence of str or None
        Predicted class per image; ``None`` (or ``""``) for an image that failed.
    classes : sequence of str
        All classes of the model (classes with no cell get count 0).
    atypical_classes : sequence of str
        Classes flagged when present.
    p_atypical : array, optional
        Per-image atypical probability (NaN for failures); summarised when given.

    Returns
    -------
    dict with ``n_images``, ``n_classified``, ``n_failed``, ``counts``, ``percent`` (share of
    all classified cells, every class included; rounded to 2 decimals; all 0 when nothing
    was classified), ``atypical_classes``, ``flagged`` (atypical classes with at least one
    cell), ``n_atypical``, ``percent_atypical``; the hematology view: ``wbc`` (``classes``,
    ``n`` leukocytes, ``counts``, ``percent`` per 100 leukocytes: the WBC differential),
    ``n_nrbc`` and ``nrbc_per_100_wbc`` (erythroblasts per 100 WBC; ``None`` when the model
    has no erythroblast class or no leukocyte was counted), ``n_platelets``; and when
    ``p_atypical`` is given ``mean_p_atypical`` and ``n_p_atypical_over_0.5``.
    """
    classes = [str(c) for c in classes]
    atyp = [str(c) for c in atypical_classes]
    ok = [str(p) for p in predicted if p is not None and p != ""]
    unknown = sorted(set(ok) - set(classes))
    if unknown:
        raise ValueError(f"predicted labels {unknown} are not among the classes {classes}")
    n = len(ok)
    counts = {c: int(sum(1 for p in ok if p == c)) for c in classes}
    percent = {c: (round(100.0 * k / n, 2) if n else 0.0) for c, k in counts.items()}
    n_atyp = int(sum(counts[c] for c in atyp if c in counts))
    out = {
        "n_images": len(predicted),
        "n_classified": n,
        "n_failed": len(predicted) - n,
        "counts": counts,
        "percent": percent,
        "atypical_classes": atyp,
        "flagged": [c for c in atyp if counts.get(c, 0) > 0],
        "n_atypical": n_atyp,
        "percent_atypical": round(100.0 * n_atyp / n, 2) if n else 0.0,
    }
    platelets = [c for c in classes if c.lower() in PLATELET_CLASSES]
    nrbc = [c for c in classes if c.lower() in NRBC_CLASSES]
    wbc = [c for c in classes if c not in platelets and c not in nrbc]
    n_wbc = int(sum(counts[c] for c in wbc))
    n_nrbc = int(sum(counts[c] for c in nrbc))
    out["wbc"] = {"classes": wbc, "n": n_wbc, "counts": {c: counts[c] for c in wbc},
                  "percent": {c: (round(100.0 * counts[c] / n_wbc, 2) if n_wbc else 0.0)
                              for c in wbc}}
    out["n_nrbc"] = n_nrbc
    out["nrbc_per_100_wbc"] = round(100.0 * n_nrbc / n_wbc, 2) if n_wbc and nrbc else None
    out["n_platelets"] = int(sum(counts[c] for c in platelets))
    if p_atypical is not None:
        pa = np.asarray(p_atypical, dtype=np.float64)
        pa = pa[np.isfinite(pa)]
        out["mean_p_atypical"] = round(float(pa.mean()), 4) if pa.size else None
        out["n_p_atypical_over_0.5"] = int((pa > 0.5).sum())
    return out


#: default accuracy that the cells *not* marked for review should reach (out of fold)
REVIEW_ACCURACY = 0.995


def review_curve(confidence, right):
    """Accuracy of the cells kept against the share sent to review, for every threshold.

    Cells are ranked by decreasing ``confidence`` (top class probability); for each distinct
    confidence ``t`` the cells with ``confidence >= t`` are kept (accepted) and the rest go
    to review. Non-finite confidences are ignored.

    Returns
    -------
    DataFrame with one row per distinct confidence, from the highest: ``threshold`` (``t``),
    ``n_accepted``, ``review_fraction`` (``1 - n_accepted / n``) and ``accepted_accuracy``.

    >>> review_curve([0.9, 0.8, 0.8, 0.6], [True, True, False, True]).round(3).values.tolist()
    [[0.9, 1.0, 0.75, 1.0], [0.8, 3.0, 0.25, 0.667], [0.6, 4.0, 0.0, 0.75]]
    """
    import pandas as pd

    conf = np.asarray(confidence, dtype=np.float64)
    right = np.asarray(right, dtype=bool)
    keep = np.isfinite(conf)
    conf, right = conf[keep], right[keep]
    columns = ["threshold", "n_accepted", "review_fraction", "accepted_accuracy"]
    n = len(conf)
    if n == 0:
        return pd.DataFrame(columns=columns)
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], right[order]
    k = np.flatnonzero(np.append(conf[1:] < conf[:-1], True)) + 1   # ends of tied runs
    hits = np.cumsum(right)[k - 1]
    return pd.DataFrame({"threshold": conf[k - 1], "n_accepted": k,
                         "review_fraction": 1.0 - k / n, "accepted_accuracy": hits / k},
                        columns=columns)


def review_threshold(proba, y, classes, target_accuracy: float = REVIEW_ACCURACY) -> dict:
    """The confidence below which a cell goes to a person for review.

    With ``conf = max_c p(c | x)`` the cells are ranked by decreasing confidence; the
    threshold ``t`` is the lowest confidence such that the cells with ``conf >= t`` are
    classified right at least ``target_accuracy`` of the time (the largest such accepted
    set; cells tied at ``t`` are all accepted or all reviewed; :func:`review_curve`). Chosen
    on held-out probabilities -- the stack's out-of-fold ones
    (:attr:`StackedCellClassifier.oof_proba_`) at training -- never on the images it is then
    applied to.

    Parameters
    ----------
    proba : array (n, C)
        Class probabilities (rows with a NaN are ignored).
    y : array (n,)
        True labels.
    classes : sequence of str
        The columns' classes.
    target_accuracy : float in (0, 1]

    Returns
    -------
    dict with ``target_accuracy``, ``threshold`` (0.0: every cell is accepted; above 1: every
    cell is reviewed, the target is out of reach), ``n``, and on those ``n`` cells
    ``review_fraction`` and ``accepted_accuracy`` (``None`` when nothing is accepted, or
    both ``None`` when ``n`` is 0).

    >>> p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.55, 0.45]])
    >>> r = review_threshold(p, ["a", "a", "b", "a"], ["a", "b"], target_accuracy=1.0)
    >>> r["threshold"], r["review_fraction"], r["accepted_accuracy"]
    (0.8, 0.5, 1.0)
    """
    if not 0 < float(target_accuracy) <= 1:
        raise ValueError(f"target_accuracy must lie in (0, 1], got {target_accuracy!r}")
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y).astype(str)
    keep = np.isfinite(proba).all(axis=1)
    proba, y = proba[keep], y[keep]
    n = len(y)
    out = {"target_accuracy": float(target_accuracy), "n": int(n)}
    if n == 0:
        return {**out, "threshold": 0.0, "review_fraction": None, "accepted_accuracy": None}
    right = np.asarray(classes, dtype=str)[proba.argmax(axis=1)] == y
    curve = review_curve(proba.max(axis=1), right)
    ok = curve[curve["accepted_accuracy"] >= target_accuracy]
    if ok.empty:
        return {**out, "threshold": float(np.nextafter(1.0, 2.0)), "review_fraction": 1.0,
                "accepted_accuracy": None}
    best = ok.iloc[-1]                                    # the most cells accepted
    t = 0.0 if int(best["n_accepted"]) == n else float(best["threshold"])
    return {**out, "threshold": t, "review_fraction": float(best["review_fraction"]),
            "accepted_accuracy": float(best["accepted_accuracy"])}


#: a batch is called harder than the training images when its share of cells marked for review
#: is at least this many times the training images' out-of-fold share ...
REVIEW_EXCESS_RATIO = 2.0
#: ... and a one-sided binomial test puts that many marked cells below this p-value
REVIEW_EXCESS_P = 0.001


def review_excess(n_marked: int, n: int, expected: float) -> dict:
    """Are more cells marked for review than on images like the training ones?

    ``expected`` is the share of the training images below the threshold out of fold
    (``review_fraction`` of :func:`review_threshold`). Under "the batch is like the training
    images" the count of marked cells is about Binomial(``n``, ``expected``); the batch is
    called **harder** when ``n_marked / n >= REVIEW_EXCESS_RATIO * expected`` and the one-sided
    p-value ``P(X >= n_marked)`` is below :data:`REVIEW_EXCESS_P` (both fixed a priori: a
    large effect, not a chance excess in a small batch).

    >>> r = review_excess(11, 40, 0.081)
    >>> r["ratio"] > 3, r["p_value"] < 1e-3, r["harder"]
    (True, True, True)
    >>> review_excess(193, 2737, 0.081)["harder"]
    False
    """
    from scipy.stats import binom

    n, n_marked = int(n), int(n_marked)
    if n == 0 or not 0 < float(expected) < 1:
        return {"ratio": None, "p_value": None, "harder": False}
    share = n_marked / n
    p = float(binom.sf(n_marked - 1, n, float(expected)))
    ratio = share / float(expected)
    return {"ratio": ratio, "p_value": p,
            "harder": bool(ratio >= REVIEW_EXCESS_RATIO and p < REVIEW_EXCESS_P)}


def plot_review_curve(curve, path: str | os.PathLike, threshold: float | None = None,
                      title: str = "Accuracy of the cells not sent to review") -> None:
    """:func:`review_curve` as a PNG: accuracy of the kept cells against the share reviewed,
    with the model's threshold marked when given."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ._utils import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    ax.plot(100 * curve["review_fraction"], 100 * curve["accepted_accuracy"], lw=1.5)
    at = curve[curve["threshold"] >= threshold] if threshold is not None else curve.iloc[:0]
    x_mark = None
    if len(at):
        row = at.iloc[-1]                                  # the cells kept at the threshold
        x_mark = 100 * float(row["review_fraction"])
        ax.plot(x_mark, 100 * row["accepted_accuracy"], "o", clip_on=False,
                label=f"threshold {threshold:.3f}: {100 * row['review_fraction']:.1f}% "
                      f"reviewed, {100 * row['accepted_accuracy']:.2f}% right")
        ax.legend(loc="lower right", fontsize=8)
    if len(curve):  # up to where the kept cells reach their best accuracy, not all 100%,
        # and always far enough to show the threshold's point
        best = curve[curve["accepted_accuracy"] >= curve["accepted_accuracy"].max()]
        right = max(10.0, 120.0 * float(best["review_fraction"].min()))
        if x_mark is not None:
            right = max(right, 1.1 * x_mark + 1.0)
        ax.set_xlim(0, min(100.0, right))
    ax.set_xlabel("cells sent to review (%)")
    ax.set_ylabel("accuracy of the other cells (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def format_differential(d: dict) -> str:
    """The differential count as text, as a hematology report reads: the WBC differential
    (per 100 leukocytes), nucleated red cells per 100 WBC and platelets apart, with a
    ``review`` column of the cells per class marked for review when
    ``d["needs_review"]["by_class"]`` is there, and the atypical classes flagged."""
    review = (d.get("needs_review") or {}).get("by_class")
    wbc = d.get("wbc") or {"classes": list(d["counts"]), "n": d["n_classified"],
                           "percent": d["percent"]}
    others = [c for c in d["counts"] if c not in wbc["classes"]]
    width = max([len(display_name(c)) for c in d["counts"]] + [len("class")]) + 2
    lines = [(f"Differential count ({plural(d['n_classified'], 'cell')} classified, "
              f"{d['n_failed']} failed)"),
             f"  WBC differential ({wbc['n']} leukocytes; % per 100 WBC):",
             f"  {'class':<{width}}{'count':>7}{'% WBC':>9}" + (f"{'review':>8}" if review
                                                                else "")]

    def row(c: str, value: str) -> str:
        flag = "  <- flagged (atypical)" if c in d["flagged"] else ""
        rv = f"{review.get(c, 0):>8}" if review else ""
        return f"  {display_name(c):<{width}}{d['counts'][c]:>7}{value:>9}{rv}{flag}"

    for c in wbc["classes"]:
        lines.append(row(c, f"{wbc['percent'][c]:.2f}"))
    for c in others:
        flag = "  <- flagged (atypical)" if c in d["flagged"] else ""
        rv = f", {review.get(c, 0)} marked for review" if review else ""
        if c.lower() in NRBC_CLASSES:
            per = d.get("nrbc_per_100_wbc")
            value = f"{per:.2f} per 100 WBC" if per is not None else "no WBC to count against"
            lines.append(f"  nucleated red cells ({c}): {d['counts'][c]}, {value}{rv}{flag}")
        elif c.lower() in PLATELET_CLASSES:
            lines.append(f"  platelets ({c}): {d['counts'][c]}, counted apart from the "
                         f"WBC{rv}{flag}")
    if d["flagged"]:
        sure = ""
        if review:
            n_rev = sum(review.get(c, 0) for c in d["flagged"])
            sure = f"; {d['n_atypical'] - n_rev} of them not marked for review"
        lines.append(f"  FLAG: atypical classes present: "
                     f"{', '.join(display_name(c) for c in d['flagged'])} "
                     f"({plural(d['n_atypical'], 'cell')}, {d['percent_atypical']:.2f}% of "
                     f"the classified cells{sure})")
    elif d["n_classified"]:
        lines.append("  no atypical class present")
    return "\n".join(lines)


def plural(n: int, word: str, plural_form: str | None = None) -> str:
    """``n`` and ``word``, pluralised in English: ``"1 class"``, ``"2 classes"``, ``"3 cells"``.

    >>> plural(1, "class"), plural(2, "class"), plural(0, "cell"), plural(2, "repeat", "repeat")
    ('1 class', '2 classes', '0 cells', '2 repeat')
    """
    if n == 1:
        return f"1 {word}"
    if plural_form is None:
        plural_form = word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n} {plural_form}"


def most_confused(cm: np.ndarray, labels: Sequence[str], top: int = 5) -> list[dict]:
    """Off-diagonal confusion-matrix cells by decreasing count (``true``, ``predicted``,
    ``count``, ``fraction`` = count / support of the true class)."""
    cm = np.asarray(cm)
    pairs = []
    for i in range(cm.shape[0]):
        support = cm[i].sum()
        for j in range(cm.shape[1]):
            if i != j and cm[i, j] > 0:
                pairs.append({"true": str(labels[i]), "predicted": str(labels[j]),
                              "count": int(cm[i, j]),
                              "fraction": round(float(cm[i, j] / support), 4)})
    pairs.sort(key=lambda r: (-r["count"], r["true"], r["predicted"]))
    return pairs[:top]


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str],
                           proba: np.ndarray | None = None,
                           classes: Sequence[str] | None = None) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class P/R/F1/support/ROC AUC, confusion.

    ``classes`` are the columns of ``proba``. The label set of the per-class table and the
    confusion matrix is the union of ``classes``, ``y_true`` and ``y_pred`` (sorted); macro
    averages follow scikit-learn (labels present in ``y_true`` or ``y_pred``).
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y_true = np.asarray([str(v) for v in y_true], dtype=object)
    y_pred = np.asarray([str(v) for v in y_pred], dtype=object)
    classes = [str(c) for c in (classes if classes is not None else [])]
    labels = sorted(set(classes) | set(y_true) | set(y_pred))
    out = {"n": len(y_true)}
    if len(y_true) == 0:
        out.update(accuracy=None, balanced_accuracy=None, macro_f1=None, per_class={},
                   labels=labels, confusion_matrix=[], most_confused=[])
        return out
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per = {}
    for k, c in enumerate(labels):
        auc = None
        if proba is not None and c in classes:
            pos = y_true == c
            if 0 < pos.sum() < len(y_true):
                auc = float(roc_auc_score(pos, np.asarray(proba)[:, classes.index(c)]))
        per[c] = {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                  "support": int(s[k]), "roc_auc": auc}
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    out.update(
        accuracy=float(accuracy_score(y_true, y_pred)),
        # mean recall over the classes present in y_true (balanced_accuracy_score's
        # definition, without its warning when y_pred holds other classes)
        balanced_accuracy=float(np.mean(r[s > 0])),
        macro_f1=float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        per_class=per, labels=labels, confusion_matrix=cm.tolist(),
        most_confused=most_confused(cm, labels))
    return out


def format_metrics(m: dict) -> str:
    """Metrics as text: overall scores, per-class table, most-confused pairs."""
    if not m.get("n"):
        return "no image could be evaluated"
    width = max([len(display_name(c)) for c in m["per_class"]] + [len("class")]) + 2
    lines = [(f"accuracy {m['accuracy']:.4f}   balanced accuracy "
              f"{m['balanced_accuracy']:.4f}   macro-F1 {m['macro_f1']:.4f}   (n={m['n']})"),
             (f"  {'class':<{width}}{'precision':>10}{'recall':>8}{'F1':>8}{'AUC':>8}"
              f"{'support':>9}")]
    for c, r in m["per_class"].items():
        auc = "-" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}"
        lines.append(f"  {display_name(c):<{width}}{r['precision']:>10.4f}{r['recall']:>8.4f}"
                     f"{r['f1']:>8.4f}{auc:>8}{r['support']:>9}")
    if m["most_confused"]:
        lines.append("  most confused (true -> predicted):")
        for q in m["most_confused"]:
            lines.append(f"    {display_name(q['true'])} -> {display_name(q['predicted'])}: "
                         f"{q['count']} ({100 * q['fraction']:.1f}% of "
                         f"{display_name(q['true'])})")
    return "\n".join(lines)


def plot_confusion_matrix(cm, labels: Sequence[str], path: str | os.PathLike,
                          title: str = "Confusion matrix") -> None:
    """Row-normalised confusion matrix as a PNG (cells annotated with counts)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ._utils import atomic_path

    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def top_features_table(importances, top: int = 10):
    """Long table ``class, rank, feature, importance`` from a (classes x features) DataFrame."""
    import pandas as pd

    rows = []
    for c, row in importances.iterrows():
        order = np.argsort(-row.to_numpy(), kind="stable")[:top]
        rows += [(c, r + 1, importances.columns[j], float(row.iloc[j]))
                 for r, j in enumerate(order)]
    return pd.DataFrame(rows, columns=["class", "rank", "feature", "importance"])


def plot_top_features(table, path: str | os.PathLike,
                      title: str = "Top features per class (XGBoost gain share)") -> None:
    """One horizontal bar chart per class from :func:`top_features_table` output, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ._utils import atomic_path

    classes = list(dict.fromkeys(table["class"]))
    ncol = 2 if len(classes) > 1 else 1
    nrow = (len(classes) + ncol - 1) // ncol
    k = int(table.groupby("class").size().max())
    fig, axes = plt.subplots(nrow, ncol, figsize=(7 * ncol, 0.35 * k * nrow + 1.0 * nrow),
                             squeeze=False)
    for ax, c in zip(axes.ravel(), classes, strict=False):
        t = table[table["class"] == c].sort_values("rank", ascending=False)
        ax.barh(t["feature"], t["importance"], color="tab:blue")
        ax.set_title(str(c))
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(classes):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_size_inches()[1]))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# -- files and text of a training ------------------------------------------------------------
def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def json_text(obj) -> str:
    """``obj`` as indented JSON text (numpy scalars and arrays as numbers)."""
    import json

    return json.dumps(obj, indent=2, default=_jsonable)


def write_json(obj, path: str | os.PathLike) -> None:
    """``obj`` as indented JSON, written atomically (numpy scalars and arrays as numbers)."""
    import json

    from ._utils import atomic_write

    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, default=_jsonable)
        fh.write("\n")


def final_classifier(est):
    """The :class:`~morphocell.ensembles.StackedCellClassifier` of ``est`` (itself, or the last
    step of a Pipeline), else ``None``."""
    from .ensembles.stacking import StackedCellClassifier

    if isinstance(est, StackedCellClassifier):
        return est
    steps = getattr(est, "steps", None)
    if steps and isinstance(steps[-1][1], StackedCellClassifier):
        return steps[-1][1]
    return None


def write_explanation(model, folder: str | os.PathLike, top: int = 15) -> list:
    """Top features per class (XGBoost gain share) as CSV + PNG, and the training record
    (CV scores, metadata) as ``training.json``; returns the paths written."""
    from pathlib import Path

    from ._utils import write_csv

    folder = Path(folder)
    written = []
    clf = final_classifier(model.estimator)
    write_json({"cv_scores": model.metadata.get("cv_scores", {}),
                "metadata": model.metadata}, folder / "training.json")
    written.append(folder / "training.json")
    if clf is not None and hasattr(clf, "class_importances"):
        try:
            imp = clf.class_importances()
        except AttributeError:
            return written
        table = top_features_table(imp, top=top)
        write_csv(table, folder / "top_features.csv", float_format="%.6g")
        plot_top_features(table, folder / "top_features.png")
        written += [folder / "top_features.csv", folder / "top_features.png"]
    return written
