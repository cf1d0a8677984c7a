"""The training record: content hashes and duplicates, the metadata stored in a model file,
the review threshold (private helpers of :mod:`morphocell.train`)."""
from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Sequence

import numpy as np

from .errors import DataError, MorphocellError
from .report import REVIEW_ACCURACY, plural


def readability(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(statuses, errors)``: "ok" for the images that can be read, else "error" and why
    (the deep-only paths read images themselves; this flags the bad ones up front)."""
    from .io import read_image

    st, er = [], []
    for p in paths:
        try:
            read_image(p)
            st.append("ok")
            er.append("")
        except MorphocellError as exc:
            st.append("error")
            er.append(str(exc))
    return st, er


def content_groups(paths: Sequence[str], hashes: Sequence[str | None] | None = None
                   ) -> tuple[list[str | None], list[list[int]]]:
    """``(hashes, groups)``: the SHA-256 of each file's bytes (``None`` when it cannot be
    read) and the groups of indices whose files have the same content (two or more each, in
    order of first appearance). The same path listed twice is one such group."""
    if hashes is None:
        from .batch.cache import image_sha256

        hashes = [image_sha256(p) for p in paths]
    where: dict[str, list[int]] = {}
    for i, h in enumerate(hashes):
        if h is not None:
            where.setdefault(h, []).append(i)
    return list(hashes), [g for g in where.values() if len(g) > 1]


def _check_duplicates(paths, labels, groups) -> None:
    """Refuse the same image content under two labels (one of them is wrong)."""
    for g in groups:
        other = next((j for j in g[1:] if labels[j] != labels[g[0]]), None)
        if other is not None:
            raise DataError(f"the same image has two labels: {paths[g[0]]} ({labels[g[0]]}) "
                            f"and {paths[other]} ({labels[other]}) have identical content; "
                            "fix the label of one (or remove the copy)")


def n_exact_duplicates(hashes: Sequence[str | None]) -> int:
    """Files whose content (SHA-256) repeats a file listed before them."""
    known = [h for h in hashes if h is not None]
    return len(known) - len(set(known))


def near_duplicates(paths: Sequence[str], labels: Sequence[str],
                    hashes: Sequence[str | None], dups: Sequence[Sequence[int]], *,
                    n_jobs: int | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """``(near, linked)``: the groups of indices of images that are the same cell saved again
    with other content (:mod:`morphocell.near_duplicates`: re-encoded, slightly resized,
    turned, mirrored, brighter; one file per distinct content, exact copies left to
    ``dups``), and the groups that must share a cross-validation fold: the exact duplicates
    ``dups`` and the near-duplicate groups joined (each sorted, two or more indices).

    Raises
    ------
    DataError
        Two near-duplicate images with different labels (one of them is wrong), naming both
        files and their distance.
    """
    from .near_duplicates import (
        HASH_BITS,
        NEAR_DUPLICATE_BITS,
        image_hashes,
        near_duplicate_groups,
        near_duplicate_pairs,
    )

    # one file per content: exact copies are grouped already and cost nothing more
    later = {j for g in dups for j in g[1:]}
    rep = [i for i, h in enumerate(hashes) if h is not None and i not in later]
    if len(rep) < 2:
        return [], [list(g) for g in dups]
    hashed, ok = image_hashes([paths[i] for i in rep], n_jobs=n_jobs)
    pairs, dist = near_duplicate_pairs(hashed, ok)
    rep_arr = np.asarray(rep, dtype=np.int64)
    pairs = rep_arr[pairs] if len(pairs) else np.zeros((0, 2), np.int64)
    for (a, b), d in zip(pairs.tolist(), dist.tolist(), strict=True):
        if labels[a] != labels[b]:
            raise DataError(
                f"the same cell has two labels: {paths[a]} ({labels[a]}) and {paths[b]} "
                f"({labels[b]}) are near-duplicates (the same image re-saved: hash distance "
                f"{d} of {HASH_BITS} bits, at most {NEAR_DUPLICATE_BITS} counts as the same "
                "cell); fix the label of one (or remove the copy)")
    near = near_duplicate_groups(pairs, len(paths))
    linked = near_duplicate_groups(pairs, len(paths), exact=dups)
    return near, linked


def _data_sha256(paths: Sequence[str], labels: Sequence[str],
                 hashes: Sequence[str | None] | None = None) -> str:
    """SHA-256 over the sorted ``(image content hash, label)`` pairs: the same images with the
    same labels give the same hash whatever their paths or order (``hashes``: the files'
    SHA-256 when already known, as :func:`content_groups` returns them)."""
    if hashes is None:
        hashes = content_groups(paths)[0]
    pairs = sorted(f"{h or 'unreadable:' + p}\t{lab}"
                   for h, p, lab in zip(hashes, paths, labels, strict=True))
    return hashlib.sha256("\n".join(pairs).encode()).hexdigest()


def _check_trainable(y: np.ndarray) -> None:
    classes, counts = np.unique(np.asarray(y, dtype=str), return_counts=True)
    names = [str(c) for c in classes]
    if len(classes) < 2:
        raise DataError(f"need images of at least 2 classes that could be measured, got "
                        f"{plural(len(classes), 'class')}"
                        + (f" ({', '.join(names)})" if names else ""))
    if counts.min() < 2:
        rare = [c for c, k in zip(names, counts, strict=True) if k < 2]
        raise DataError(f"need at least 2 usable images per class for cross-validation; "
                        f"too few for {', '.join(rare)}")


def _versions() -> dict:
    import platform

    import sklearn
    import xgboost

    from ._version import __version__

    return {"morphocell": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scikit-learn": sklearn.__version__,
            "xgboost": xgboost.__version__}


def _failures(paths, statuses, errors) -> list[tuple[str, str, str]]:
    return [(p, s, e or s) for p, s, e in zip(paths, statuses, errors, strict=True) if s != "ok"]


def _metadata(features: str, paths, labels, hashes, dups, y_used, est, classes, *, cv,
              random_state, domain_copies,
              n_domain_copies, cv_scores, review_accuracy, reference, specific: dict) -> dict:
    """The training record stored in every model file (the one place it is built).

    ``y_used``: labels of the images that trained the model (not their copies);
    ``reference``: hand-crafted features of those images for the out-of-distribution
    reference (:func:`morphocell.novelty.fit_novelty_reference`), or ``None``.
    """
    from .novelty import fit_novelty_reference

    y_used = np.asarray(y_used).astype(str)
    n_used = len(y_used)
    meta = {
        "features": features,
        **specific,
        "data_sha256": _data_sha256(paths, labels, hashes),
        "trained": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "n_images": len(paths),
        "n_used": n_used,
        "n_failed": len(paths) - n_used,
        "class_counts": {c: int((y_used == c).sum()) for c in classes},
        "domain_copies": float(domain_copies),
        "n_domain_copies": int(n_domain_copies),
        "n_duplicates": n_exact_duplicates(hashes),
        "cv": cv,
        "random_state": random_state,
        "cv_scores": cv_scores,
        "versions": _versions(),
    }
    # the images themselves, not their domain copies: the reference says what the lab's own
    # cells look like (copies would widen it until another lab's stain passes as "like")
    ref = fit_novelty_reference(*reference) if reference is not None else None
    if ref is not None:
        meta["domain_reference"] = ref
    review = review_reference(est, y_used, classes, review_accuracy)
    if review is not None:
        meta["review"] = review
    return meta


def review_reference(est, y, classes, target_accuracy: float = REVIEW_ACCURACY) -> dict | None:
    """The confidence threshold for review (:func:`morphocell.report.review_threshold`) of a
    fitted model, chosen on its out-of-fold probabilities of the training images ``y`` (the
    first ``len(y)`` rows: domain copies, which come last, are left out, as they are not the
    lab's images). ``None`` when the model has none (a stack fitted without folds)."""
    from .report import review_threshold

    steps = getattr(est, "steps", None)
    final = steps[-1][1] if steps else est
    oof = getattr(getattr(final, "stack_", final), "oof_proba_", None)
    if oof is None:
        return None
    y = np.asarray(y).astype(str)
    return review_threshold(np.asarray(oof)[:len(y)], y, classes, target_accuracy)
