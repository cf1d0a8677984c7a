"""Step 1 of :mod:`morphocell.deep.crossfit`: K networks, each trained on K - 1 folds, and the
out-of-fold embedding of every image from the one network that did not see it.

Public names are re-exported by :mod:`morphocell.deep.crossfit`, where the scheme is
described.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, MorphocellError

__all__ = ["CrossFit", "crossfit_embeddings", "default_embedder", "proba_names",
           "DEFAULT_EMBEDDER"]

#: :class:`CNNEmbedder` parameters of the deep path when no ``embedder`` is given (and the base
#: that :func:`fit_deep_model`'s keyword arguments override): sized for a CPU (64 px input, a
#: small residual network); the network sees the central 75% of the image (``crop``), which
#: keeps most of the rim of a cell filling another lab's crop; ``augment="stain"``: other
#: labs' stains and optics (:data:`morphocell.deep.augment.STAIN`). The measurements behind
#: these choices: docs/experiments/2026-11-30-cnn-centre-crop.md and
#: docs/experiments/2026-11-30-cnn-stain-augmentation.md.
DEFAULT_EMBEDDER = {"architecture": "small-resnet", "input_size": 64, "crop": 0.75,
                    "embedding_dim": 256, "epochs": 20, "batch_size": 32, "augment": "stain"}


def proba_names(n_classes: int) -> list[str]:
    """Column names of the deep path's out-of-fold probabilities in the fused table."""
    return [f"Cell_Embedding_CnnProba_{j:02d}" for j in range(int(n_classes))]


def _log(verbose, msg):
    if verbose:
        print(msg, file=sys.stderr, flush=True)


def _seeds(random_state, n: int) -> list[int | None]:
    if random_state is None:
        return [None] * n
    rng = np.random.RandomState(int(random_state))
    return [int(s) for s in rng.randint(np.iinfo(np.int32).max, size=n)]


@dataclass
class CrossFit:
    """Result of :func:`crossfit_embeddings`.

    Attributes
    ----------
    embedders : list of fitted CNNEmbedder, one per fold; ``embedders[k].train_index_`` are
        the positions (into the decoded training set) it was trained on.
    fold : int array (n,)
        Fold of each image: ``embedders[fold[i]]`` did not see image ``i``.
    embeddings : float32 array (n, embedding_dim)
        Out-of-fold embedding of every image (row ``i`` from ``embedders[fold[i]]``).
    proba : float32 array (n, n_classes)
        Out-of-fold softmax of the CNN (same networks).
    images : uint8 array (n, S, S, 3)
        The decoded images (shared by all folds).
    y : array (n,) of labels
    failures : list of (source, reason) of unreadable inputs (dropped)
    """

    embedders: list
    fold: np.ndarray
    embeddings: np.ndarray
    proba: np.ndarray
    images: np.ndarray
    y: np.ndarray
    classes: np.ndarray
    failures: list = field(default_factory=list)
    train_time_s: float = 0.0


def default_embedder(**overrides):
    """A :class:`CNNEmbedder` with :data:`DEFAULT_EMBEDDER`'s parameters, then ``overrides``."""
    from .embedder import CNNEmbedder

    return CNNEmbedder(**{**DEFAULT_EMBEDDER, **overrides})


def _template(embedder):
    """The embedder template of a cross-fit (``None``: :func:`default_embedder`)."""
    from .embedder import CNNEmbedder

    if embedder is None:
        return default_embedder()
    if not isinstance(embedder, CNNEmbedder):
        raise MorphocellError(f"embedder must be a CNNEmbedder or None (got "
                              f"{type(embedder).__name__})")
    return embedder


def crossfit_embeddings(X, y, *, cv: int = 5, random_state=None, verbose: int = 1,
                        embedder=None, **embedder_params) -> CrossFit:
    """Train ``cv`` networks on ``cv - 1`` folds each; embed every image with the network that
    did not see it (step 1 of :mod:`morphocell.deep.crossfit`).

    Parameters
    ----------
    X : image paths / arrays (anything :class:`CNNEmbedder` accepts)
    y : labels
    cv : int >= 2
    random_state : int, optional
        Seeds the folds and each network (network ``k`` gets its own derived seed).
    verbose : int
        Progress messages on stderr (also the networks' ``verbose``).
    embedder : CNNEmbedder, optional
        Template of the networks (its ``random_state`` and ``verbose`` are replaced); default
        :func:`default_embedder`.
    **embedder_params
        :class:`CNNEmbedder` parameters set on (a clone of) the template.
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    from .embedder import decode_images

    base = clone(_template(embedder)).set_params(**embedder_params, verbose=verbose)
    y = np.asarray(y)
    if not isinstance(cv, (int, np.integer)) or cv < 2:
        raise MorphocellError(f"cv must be an integer >= 2 for cross-fitting (got {cv!r})")
    images, ok, failures = decode_images(X, int(base.input_size), verbose=verbose,
                                         crop=float(base.crop))
    if len(ok) + len(failures) != len(y):
        raise DataError(f"got {len(ok) + len(failures)} images but {len(y)} labels")
    for src, reason in failures:
        _log(verbose, f"warning: skipped unreadable training image {src}: {reason}")
    y = y[ok]
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"need at least 2 classes (got {list(classes)})")
    if counts.min() < cv:
        raise DataError(f"cross-fitting with cv={cv} needs at least {cv} images per class; "
                        f"{classes[np.argmin(counts)]!r} has {counts.min()}")
    seeds = _seeds(random_state, cv + 1)
    skf = StratifiedKFold(int(cv), shuffle=True, random_state=seeds[0])
    fold = np.full(len(y), -1, np.int64)
    emb = proba = None
    embedders = []
    t0 = time.perf_counter()
    for k, (tr, te) in enumerate(skf.split(np.zeros(len(y)), y)):
        _log(verbose, f"cross-fitting network {k + 1}/{cv}: training on {len(tr)} images, "
                      f"embedding {len(te)} held-out images")
        net = clone(base).set_params(random_state=seeds[k + 1])._fit_decoded(images[tr],
                                                                              y[tr])
        net.train_index_ = tr
        if not np.array_equal(net.classes_, classes):  # guaranteed by stratification
            raise DataError(f"fold {k} misses classes")  # pragma: no cover
        e, p, _ = net._infer(images[te])
        if emb is None:
            emb = np.empty((len(y), e.shape[1]), np.float32)
            proba = np.empty((len(y), p.shape[1]), np.float32)
        emb[te], proba[te], fold[te] = e, p, k
        embedders.append(net)
    return CrossFit(embedders, fold, emb, proba, images, y, classes, failures,
                    time.perf_counter() - t0)
