"""``CNNEmbedder``: a Keras CNN trained on labelled cell images, used as a feature extractor.

>>> from morphocell.deep import CNNEmbedder                         # doctest: +SKIP
>>> emb = CNNEmbedder(input_size=64, epochs=5, random_state=0).fit(paths, labels)
>>> emb.transform(new_paths).columns[:2].tolist()
['Cell_Embedding_Cnn_0000', 'Cell_Embedding_Cnn_0001']

Pipeline
--------
1. **Decoding** (parallel, cached): every image goes through :func:`morphocell.io.read_image`
   (the same validated reader as the rest of the library, so a bad file gives the same clear
   error) in a thread pool (JPEG/PNG decoding releases the GIL), is padded to a square with the
   median colour of its border and resized to ``input_size`` (``cv2.INTER_AREA`` when
   shrinking, bilinear when enlarging). The decoded ``uint8`` tensor is the cache: it is held
   in memory for all epochs (``n * S * S * 3`` bytes: 134 MB for 11k images at 64 px) and is
   shared by the K cross-fitting networks of :mod:`morphocell.deep.crossfit`.
2. **tf.data**: ``from_tensor_slices -> shuffle(seeded, reshuffled every epoch) -> repeat
   -> zip(counter) -> map(augment, AUTOTUNE parallel, deterministic order) -> batch ->
   prefetch(AUTOTUNE)``, so augmentation of the next batches overlaps training.
3. **Training** (:mod:`morphocell.deep._training`): the network (:mod:`morphocell.deep.models`)
   is trained as a softmax classifier with AdamW (weight decay 1e-4) and sparse categorical
   cross-entropy. Learning rate: linear
   warm-up from 0 to ``learning_rate`` over the first epoch, then cosine decay
   ``lr(t) = learning_rate * (1 + cos(pi * t / T)) / 2`` to 0 at ``T = epochs * steps``.
   A stratified ``validation_fraction`` of the training images is held out; early stopping
   watches the validation loss (``patience`` epochs) and restores the best weights.
4. **Precise batch-norm statistics**: after training, the BN moving means/variances are
   recomputed as the exact average of the batch statistics of the training images (no
   augmentation, batches of 256) -- Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021).
   The exponential moving averages Keras keeps during training lag behind the weights (badly
   so after a few epochs, or with ``momentum=0.99`` backbones), which makes inference-mode
   predictions worse than the training curve claims. Inference always runs in inference mode
   (``training=False``), so it does not depend on the batch size.
5. **Inference**: ``transform`` returns the 'embedding' layer (``Dense(embedding_dim)+ReLU``,
   the penultimate layer) as ``Cell_Embedding_Cnn_0000 ...``; ``predict_proba`` the softmax.

Devices and precision
---------------------
TensorFlow is imported on first use (``import morphocell`` never imports it). When TensorFlow
sees a GPU the network is built under the ``mixed_float16`` policy (float16 compute, float32
weights and softmax, dynamic loss scaling by Keras); on a CPU everything is float32.
``device_`` and ``mixed_precision_`` record what a fit used.

Determinism
-----------
With an integer ``random_state`` the fit calls ``keras.utils.set_random_seed`` (Python, NumPy,
TensorFlow and Keras seeds: weight initialisation, dropout), seeds the shuffle and the
validation split, draws every augmentation from stateless ops keyed by ``(random_state,
image counter)`` and enables ``tf.config.experimental.enable_op_determinism()``. On a CPU two
fits with the same seed and the same number of TensorFlow threads give bit-identical weights,
embeddings and probabilities (tested). Not guaranteed: identity across machines, CPU types or
TensorFlow / oneDNN versions, or with another ``TF_NUM_INTRAOP_THREADS`` (float reductions
are summed in a different order), and on a GPU some ops lack deterministic kernels (TF then
raises rather than silently differing). ``enable_op_determinism`` is process-wide and cannot be
switched off again in TF 2.21; pass ``random_state=None`` to leave TensorFlow untouched (and
get non-reproducible fits).
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..errors import DataError, ImageReadError, ModelFileError, MorphocellError
from ._training import _gpu_available, _tf, make_eval_dataset, precise_bn, train_network
from .augment import augment_config
from .models import load_backbone_weights, model_from_bytes, model_to_bytes

__all__ = ["CNNEmbedder", "decode_images", "embedding_names", "FORMAT", "FORMAT_VERSION"]

#: ``format`` field of the JSON header inside a saved embedder.
FORMAT = "morphocell-cnn-embedder"
FORMAT_VERSION = 1
_HEADER = "morphocell_cnn.json"
_MODEL = "model.keras"


# ----------------------------------------------------------------------------- helpers

def embedding_names(dim: int) -> list[str]:
    """``Cell_Embedding_Cnn_0000 ... `` for ``dim`` embedding columns."""
    return [f"Cell_Embedding_Cnn_{i:04d}" for i in range(int(dim))]


def _square_resize(img: np.ndarray, size: int, crop: float = 1.0) -> np.ndarray:
    """Keep the central ``crop`` share of ``img``'s shorter side (a square; ``crop=1``: the whole
    image), pad to a square with the median colour of its border, then resize to
    ``size x size`` (area interpolation when shrinking, bilinear when enlarging)."""
    import cv2

    h, w = img.shape[:2]
    if crop < 1.0:
        side = max(1, int(round(min(h, w) * crop)))
        y0, x0 = (h - side) // 2, (w - side) // 2
        img = img[y0:y0 + side, x0:x0 + side]
        h = w = side
    if h != w:
        border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        fill = np.median(border, axis=0).astype(np.uint8)
        side = max(h, w)
        out = np.empty((side, side, 3), np.uint8)
        out[:] = fill
        y0, x0 = (side - h) // 2, (side - w) // 2
        out[y0:y0 + h, x0:x0 + w] = img
        img = out
    if img.shape[0] == size:
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def _describe(s) -> str:
    return os.fspath(s) if isinstance(s, (str, os.PathLike)) else f"<array {np.shape(s)}>"


def _as_sources(X) -> list:
    from ..features.extractor import _as_sources as as_sources

    return as_sources(X)


def decode_images(X, size: int, n_threads: int | None = None, verbose: int = 0,
                  crop: float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Read and resize images for the CNN.

    Parameters
    ----------
    X : paths, arrays, a DataFrame with a ``path`` column, or an ``(n, S, S, 3)`` uint8 array
        (returned as is when ``S == size``: the fast path used to share one decoding among
        several networks).
    size : int
        Output side.
    crop : float in (0, 1]
        Share of each image's shorter side kept around its centre before resizing
        (:class:`CNNEmbedder` ``crop``; not applied to the ``(n, size, size, 3)`` fast path).
    n_threads : int, optional
        Decoding threads (default ``min(4, os.cpu_count())``).

    Returns
    -------
    images : uint8 array ``(n_ok, size, size, 3)``
    ok : int array of the indices (into the inputs) that decoded
    failures : list of ``(path or '<array ...>', reason)`` for the others
    """
    from concurrent.futures import ThreadPoolExecutor

    from .._utils import progress
    from ..io import read_image, validate_image

    if isinstance(X, np.ndarray) and X.ndim == 4 and X.dtype == np.uint8 \
            and X.shape[1:] == (size, size, 3):
        return X, np.arange(len(X)), []
    sources = _as_sources(X)

    def one(src):
        try:
            img = read_image(src) if isinstance(src, (str, os.PathLike)) else validate_image(src)
            return _square_resize(img, size, crop), ""
        except MorphocellError as exc:
            return None, str(exc)

    n_threads = n_threads or min(4, os.cpu_count() or 1)
    out = np.empty((len(sources), size, size, 3), np.uint8)
    ok, failures = [], []
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        results = pool.map(one, sources)
        for i, (img, err) in enumerate(progress(results, total=len(sources), desc="decode",
                                                verbose=verbose)):
            if img is None:
                failures.append((_describe(sources[i]), err))
            else:
                out[len(ok)] = img
                ok.append(i)
    return out[:len(ok)], np.asarray(ok, dtype=np.int64), failures



class CNNEmbedder(TransformerMixin, BaseEstimator):
    """A CNN trained on labelled cell images; its penultimate layer as a feature table.

    Parameters
    ----------
    architecture : str, default "small-resnet"
        ``"small-resnet"``, ``"small-cnn"`` or a keras.applications backbone
        (``"efficientnetb0"``, ``"mobilenetv3small"``, ``"mobilenetv2"``, ``"resnet50"``,
        ``"densenet121"``); see :mod:`morphocell.deep.models`.
    input_size : int, default 128
        Images are padded to a square and resized to ``input_size x input_size``.
    crop : float in (0, 1], default 1.0
        Share of the image's shorter side kept, as a square around the image centre, before
        the resize (1.0: the whole image). Cell images from analysers are centred on the
        cell; on PBC (256 px images, cells ~60-150 px) the whole frame at 64 px leaves a cell
        ~35 px wide, and ``crop=0.75`` gives the network a third more pixels of the cell at
        the same cost (docs/experiments/2026-11-30-cnn-centre-crop.md). A cell larger than
        the kept square loses its rim.
    embedding_dim : int, default 256
        Number of embedding columns.
    epochs : int, default 30
        Maximum epochs (early stopping may stop sooner).
    batch_size : int, default 32
    augment : bool, "standard", "stain" or "none", default True
        Flips, 90-degree and small rotations, stain (colour) jitter
        (:mod:`morphocell.deep.augment`). ``True`` / ``"standard"``: mild colour jitter;
        ``"stain"``: also other labs' stains and optics (hue, saturation, gamma and
        per-channel tint in the ranges of :data:`morphocell.preprocess.STAIN_AUGMENT`), for
        models meant for images from other labs; ``False``: none.
    weights : path, optional
        Local file to initialise the backbone from (a saved CNNEmbedder, a ``.keras`` model or a
        Keras ``.weights.h5``/``.h5`` file such as ImageNet ``*_notop.h5`` weights). ``None``:
        random initialisation (training from scratch). Nothing is ever downloaded.
    learning_rate : float, default 1e-3
        Peak learning rate (warm-up, then cosine decay).
    validation_fraction : float, default 0.1
        Stratified share of the training images held out for early stopping (0 disables
        early stopping).
    patience : int, default 5
        Epochs without validation-loss improvement before stopping.
    class_weight : None or "balanced", default None
        ``"balanced"`` weights class ``c`` by ``n / (n_classes * n_c)`` in the loss.
    precise_bn : bool, default True
        Recompute batch-norm statistics exactly after training (see the module docstring).
    tta : bool, default False
        Test-time augmentation: ``transform`` / ``predict_proba`` average the embeddings and
        the softmax over the 8 rotations/flips of each image (8x the inference time; training
        is unchanged). A cell has no preferred orientation and the network was trained on all
        8, so the average is a less noisy summary of the same image; the cross-fitted deep
        path and the fused stack leave it off (no gain there:
        docs/experiments/2026-11-30-cnn-test-time-augmentation.md). Can be switched on a
        fitted embedder with ``set_params(tta=True)``.
    random_state : int, optional
        Seed; see "Determinism" in the module docstring.
    verbose : int, default 1
        1: one line per epoch on stderr; 0: silent.

    Attributes
    ----------
    classes_ : ndarray
    model_ : keras.Model
    history_ : dict[str, list[float]]
        Per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``learning_rate``,
        ``images_per_s``, ``epoch_s``.
    n_epochs_ : int
        Epochs actually run.
    train_time_s_ : float
        Wall time of the Keras training loop (decoding excluded).
    fit_failures_ : list of (source, reason)
        Training images that could not be read (skipped).
    device_ : {"GPU", "CPU"}
    mixed_precision_ : bool
    """

    def __init__(self, architecture="small-resnet", input_size=128, crop=1.0, embedding_dim=256,
                 epochs=30, batch_size=32, augment=True, weights=None, learning_rate=1e-3,
                 validation_fraction=0.1, patience=5, class_weight=None, precise_bn=True,
                 tta=False, random_state=None, verbose=1):
        self.architecture = architecture
        self.input_size = input_size
        self.crop = crop
        self.embedding_dim = embedding_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.augment = augment
        self.weights = weights
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.class_weight = class_weight
        self.precise_bn = precise_bn
        self.tta = tta
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    def _check_params(self) -> None:
        from .models import ARCHITECTURES

        if self.architecture not in ARCHITECTURES:
            raise MorphocellError(f"unknown architecture {self.architecture!r}; choose one of "
                                  f"{', '.join(ARCHITECTURES)}")
        for name in ("input_size", "embedding_dim", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise MorphocellError(f"{name} must be a positive integer (got {v!r})")
        if not isinstance(self.crop, (int, float, np.integer, np.floating)) \
                or not 0 < float(self.crop) <= 1:
            raise MorphocellError(f"crop must be a number in (0, 1] (got {self.crop!r})")
        if not 0 <= float(self.validation_fraction) < 1:
            raise MorphocellError("validation_fraction must lie in [0, 1)")
        if self.class_weight not in (None, "balanced"):
            raise MorphocellError("class_weight must be None or 'balanced'")
        augment_config(self.augment)  # raises on an unknown preset
        if self.weights is not None and not Path(self.weights).is_file():
            raise ModelFileError("weights file not found", self.weights)

    def fit(self, X, y):
        """Train the network as a classifier of ``y`` on images ``X``.

        Parameters
        ----------
        X : image paths, arrays, a DataFrame with a ``path`` column, or an
            ``(n, S, S, 3)`` uint8 array already at ``input_size``.
        y : array-like of labels, one per image.

        Unreadable images are skipped (listed in ``fit_failures_``); if none is left a
        :class:`~morphocell.errors.DataError` is raised.
        """
        self._check_params()
        y = np.asarray(y)
        n_in = len(y)
        images, ok, failures = decode_images(X, int(self.input_size), verbose=self.verbose,
                                             crop=float(self.crop))
        if len(ok) + len(failures) != n_in:
            raise DataError(f"got {len(ok) + len(failures)} images but {n_in} labels")
        if len(ok) == 0:
            raise DataError("no training image could be read; first error: "
                            + (failures[0][1] if failures else "no images"))
        self.fit_failures_ = failures
        return self._fit_decoded(images, y[ok])

    def _fit_decoded(self, images: np.ndarray, y: np.ndarray):
        """Fit on decoded ``(n, S, S, 3)`` uint8 images (no failures)."""
        self._check_params()
        tf, keras = _tf()
        from sklearn.model_selection import train_test_split

        from .models import build_model

        if not hasattr(self, "fit_failures_"):
            self.fit_failures_ = []
        classes, y_idx = np.unique(np.asarray(y), return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"need at least 2 classes to train the CNN (got {list(classes)})")
        self.classes_ = classes
        seed = (int(self.random_state) if self.random_state is not None
                else int(np.random.default_rng().integers(2**31 - 1)))
        if self.random_state is not None:
            keras.utils.set_random_seed(seed)
            tf.config.experimental.enable_op_determinism()

        # stratified validation split (skipped when too small to hold every class)
        n, k = len(y_idx), len(classes)
        n_val = int(round(float(self.validation_fraction) * n))
        counts = np.bincount(y_idx, minlength=k)
        if n_val >= k and n - n_val >= k and counts.min() >= 2:
            tr, va = train_test_split(np.arange(n), test_size=n_val, stratify=y_idx,
                                      random_state=seed)
            tr, va = np.sort(tr), np.sort(va)
        else:
            tr, va = np.arange(n), np.arange(0)
        self.validation_index_ = va

        gpu = _gpu_available()
        self.device_ = "GPU" if gpu else "CPU"
        self.mixed_precision_ = gpu
        old_policy = keras.config.dtype_policy()
        try:
            if gpu:
                keras.config.set_dtype_policy("mixed_float16")
            model = build_model(self.architecture, int(self.input_size), k,
                                int(self.embedding_dim))
        finally:
            keras.config.set_dtype_policy(old_policy)
        if self.weights is not None:
            load_backbone_weights(model.get_layer("backbone"), self.weights, self.architecture)

        out = train_network(model, images, y_idx, tr, va, batch_size=int(self.batch_size),
                            epochs=int(self.epochs), learning_rate=float(self.learning_rate),
                            patience=int(self.patience), class_weight=self.class_weight,
                            augment=augment_config(self.augment), seed=seed,
                            verbose=int(self.verbose), jit_compile=gpu)
        self.train_time_s_ = out["train_time_s"]
        self.history_ = out["history"]
        self.n_epochs_ = out["n_epochs"]
        self.n_train_images_ = int(len(tr))
        self.precise_bn_batches_ = (precise_bn(model, images[tr]) if self.precise_bn else 0)
        self._set_model(model)
        return self

    def _set_model(self, model) -> None:
        _, keras = _tf()
        self.model_ = model
        self.embedding_dim_ = int(model.get_layer("embedding").units)
        self.feature_names_out_ = np.asarray(embedding_names(self.embedding_dim_), dtype=object)
        self.n_features_out_ = self.embedding_dim_
        self._infer_ = keras.Model(model.inputs, [model.get_layer("embedding").output,
                                                  model.output])

    # ------------------------------------------------------------------ inference
    def _infer(self, X, chunk: int = 2048):
        """(embeddings, probabilities, failures) with NaN rows for unreadable images; with
        ``tta`` each is the mean over the 8 rotations/flips of the image."""
        from sklearn.utils.validation import check_is_fitted

        from .._utils import DIHEDRAL, dihedral

        check_is_fitted(self, "model_")
        views = DIHEDRAL if self.tta else DIHEDRAL[:1]
        if isinstance(X, np.ndarray) and X.ndim == 4 and X.dtype == np.uint8 \
                and X.shape[1:] == (self.input_size,) * 2 + (3,):
            sources = X
            n = len(X)
        else:
            sources = _as_sources(X)
            n = len(sources)
        emb = np.full((n, self.embedding_dim_), np.nan, np.float32)
        proba = np.full((n, len(self.classes_)), np.nan, np.float32)
        failures: list[tuple[str, str]] = []
        bs = max(int(self.batch_size), 64)
        for start in range(0, n, chunk):
            part = sources[start:start + chunk]
            images, ok, fails = decode_images(part, int(self.input_size), crop=float(self.crop))
            failures.extend(fails)
            if len(ok) == 0:
                continue
            e_sum = p_sum = 0.0
            for k, flip in views:
                view = dihedral(images, k, flip, axes=(1, 2)) if k or flip else images
                e, p = self._infer_.predict(make_eval_dataset(view, bs), verbose=0)
                e_sum, p_sum = e_sum + e, p_sum + p
            emb[start + ok] = e_sum / len(views)
            proba[start + ok] = p_sum / len(views)
        return emb, proba, failures

    def transform(self, X):
        """Penultimate-layer embeddings, one row per image.

        Returns
        -------
        pandas.DataFrame
            Columns ``Cell_Embedding_Cnn_0000 ...`` (float32); unreadable images give NaN
            rows, listed in ``df.attrs["failures"]`` as ``(source, reason)``.
        """
        import pandas as pd

        emb, _, failures = self._infer(X)
        df = pd.DataFrame(emb, columns=list(self.feature_names_out_))
        df.attrs["failures"] = failures
        return df

    def predict_proba(self, X) -> np.ndarray:
        """Softmax class probabilities of the CNN alone, columns in ``classes_`` order
        (NaN rows for unreadable images)."""
        return self._infer(X)[1].astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """Most probable class per image. Raises :class:`ImageReadError` if an image
        cannot be read (use ``predict_proba`` to get NaN rows instead)."""
        emb, proba, failures = self._infer(X)
        if failures:
            raise ImageReadError(failures[0][1] + (f" (and {len(failures) - 1} more)"
                                                   if len(failures) > 1 else ""))
        return self.classes_[np.argmax(proba, axis=1)]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = self.random_state is None
        return tags

    # ------------------------------------------------------------------ persistence
    _FITTED = ("classes_", "history_", "n_epochs_", "train_time_s_", "device_",
               "mixed_precision_", "n_train_images_", "precise_bn_batches_")

    def to_bytes(self) -> bytes:
        """Serialise the fitted embedder: a zip holding ``morphocell_cnn.json`` (parameters,
        classes, training history, versions) and ``model.keras`` (the network in Keras native
        format). No pickle is involved; :meth:`from_bytes` reverses it."""
        from sklearn.utils.validation import check_is_fitted

        from .._version import __version__

        check_is_fitted(self, "model_")
        tf, keras = _tf()
        params = self.get_params()
        if params.get("weights") is not None:
            params["weights"] = os.fspath(params["weights"])
        classes = self.classes_
        header = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "morphocell_version": __version__, "keras_version": keras.__version__,
            "tensorflow_version": tf.__version__, "params": params,
            "classes": classes.tolist(), "classes_dtype": classes.dtype.str,
            "fitted": {k: getattr(self, k) for k in self._FITTED
                       if k not in ("classes_",) and hasattr(self, k)},
        }
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(_HEADER, json.dumps(header, default=_json_default))
            zf.writestr(_MODEL, model_to_bytes(self.model_))
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> CNNEmbedder:
        """Rebuild an embedder from :meth:`to_bytes` output.

        Raises
        ------
        ModelFileError
            If ``data`` is not a saved embedder (wrong format, newer format version, corrupt
            zip or Keras model); the message includes ``name``.
        """
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
            header = json.loads(zf.read(_HEADER))
            model_bytes = zf.read(_MODEL)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise ModelFileError(f"not a saved CNNEmbedder ({type(exc).__name__}: {exc})",
                                 name) from None
        if header.get("format") != FORMAT:
            raise ModelFileError(f"not a saved CNNEmbedder (format {header.get('format')!r})",
                                 name)
        if int(header.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelFileError(f"saved by a newer morphocell (embedder format "
                                 f"{header['format_version']} > {FORMAT_VERSION})", name)
        obj = cls(**header["params"])
        obj.classes_ = np.asarray(header["classes"], dtype=np.dtype(header["classes_dtype"]))
        for k, v in header.get("fitted", {}).items():
            setattr(obj, k, v)
        obj.fit_failures_ = []
        model = model_from_bytes(model_bytes, name)
        try:
            model.get_layer("embedding")
            model.get_layer("probs")
        except ValueError:
            raise ModelFileError("the Keras model has no 'embedding'/'probs' layers", name) \
                from None
        obj._set_model(model)
        if model.output.shape[-1] != len(obj.classes_):
            raise ModelFileError(f"model has {model.output.shape[-1]} outputs but "
                                 f"{len(obj.classes_)} classes are recorded", name)
        return obj

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_bytes` to ``path`` atomically."""
        from .._utils import atomic_write

        data = self.to_bytes()
        with atomic_write(path) as fh:
            fh.write(data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CNNEmbedder:
        """Read a file written by :meth:`save` (raises :class:`ModelFileError`)."""
        p = Path(path)
        if not p.is_file():
            raise ModelFileError("model file not found", p)
        return cls.from_bytes(p.read_bytes(), os.fspath(p))

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_infer_", None)
        model = state.pop("model_", None)
        if model is not None:
            state["_model_keras_bytes"] = model_to_bytes(model)
        return state

    def __setstate__(self, state):
        data = state.pop("_model_keras_bytes", None)
        state.setdefault("tta", False)  # pickled before these parameters existed
        state.setdefault("crop", 1.0)
        self.__dict__.update(state)
        if data is not None:
            self._set_model(model_from_bytes(data))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

