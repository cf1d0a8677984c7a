"""The training loop of :class:`~morphocell.deep.embedder.CNNEmbedder` (Keras 3, TensorFlow).

* :func:`train_network`: AdamW (weight decay 1e-4) on sparse categorical cross-entropy;
  learning rate warmed up linearly from 0 over the first epoch, then cosine decay
  ``lr(t) = learning_rate * (1 + cos(pi * t / T)) / 2`` to 0 at ``T = epochs * steps``; early
  stopping on the validation loss (``patience`` epochs, best weights restored) when there is a
  validation set; then exact batch-norm statistics (:func:`precise_bn`).
* The input streams: :func:`make_train_dataset` (seeded shuffle, repeat, stateless
  augmentation keyed by an image counter, batch, prefetch) and :func:`make_eval_dataset`.

TensorFlow is imported inside the functions (:func:`_tf`).
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from ..errors import MorphocellError

__all__ = ["make_train_dataset", "make_eval_dataset", "precise_bn", "train_network"]


def _tf():
    """Import TensorFlow and Keras (lazily) and check Keras 3."""
    try:
        import tensorflow as tf
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise MorphocellError("the deep features need TensorFlow and Keras 3: "
                              "pip install 'morphocell[deep]'") from exc
    if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover
        raise MorphocellError(f"Keras >= 3 is required (found {keras.__version__})")
    return tf, keras


def _gpu_available() -> bool:
    tf, _ = _tf()
    return bool(tf.config.list_physical_devices("GPU"))


def make_train_dataset(images: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                       augment):
    """Infinite, seeded, augmented training stream of ``(float32 images, int labels)``;
    ``augment``: an :class:`~morphocell.deep.augment.AugmentConfig` or ``None``."""
    tf, _ = _tf()
    from .augment import augment_image

    ds = tf.data.Dataset.from_tensor_slices((images, y.astype(np.int32)))
    ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))
    seed_t = tf.constant(seed, tf.int64)

    def prep(xy, i):
        x, label = xy
        if augment is not None:
            return augment_image(x, tf.stack([seed_t, i]), augment), label
        return tf.cast(x, tf.float32), label

    ds = ds.map(prep, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_eval_dataset(images: np.ndarray, batch_size: int, y: np.ndarray | None = None):
    tf, _ = _tf()
    ds = tf.data.Dataset.from_tensor_slices(images if y is None
                                            else (images, y.astype(np.int32)))
    if y is None:
        ds = ds.map(lambda x: tf.cast(x, tf.float32), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda x, t: (tf.cast(x, tf.float32), t),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _progress_callback(verbose: int, n_train: int, epochs: int):
    """A Keras callback printing one line per epoch (loss, accuracy, lr, images/s)."""
    _, keras = _tf()

    class EpochLine(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_begin(self, epoch, logs=None):
            self.te = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            dt = time.perf_counter() - self.te
            logs["images_per_s"] = n_train / dt if dt > 0 else float("nan")
            logs["epoch_s"] = dt
            if verbose:
                parts = [f"epoch {epoch + 1}/{epochs}"]
                for k in ("loss", "accuracy", "val_loss", "val_accuracy"):
                    if k in logs:
                        parts.append(f"{k} {logs[k]:.4f}")
                parts.append(f"{logs['images_per_s']:.0f} img/s")
                parts.append(f"{time.perf_counter() - self.t0:.0f} s")
                print("  ".join(parts), file=sys.stderr, flush=True)

    return EpochLine()


def precise_bn(model, images: np.ndarray, batch_size: int = 256) -> int:
    """Set every BatchNormalization layer's moving mean/variance to the equal-weight average
    of its batch statistics over ``images`` (inference-mode weights unchanged).

    With ``momentum_t = (t - 1) / t`` for the t-th batch, ``m_t = m_{t-1} momentum_t +
    b_t (1 - momentum_t)`` is the running mean of the batch means ``b_1..b_t`` (same for the
    variances). Returns the number of batches used (0 when there is no BN layer).
    """
    tf, keras = _tf()
    bns = [lyr for lyr in _all_layers(model)
           if isinstance(lyr, keras.layers.BatchNormalization)]
    if not bns or len(images) == 0:
        return 0
    batch_size = min(batch_size, len(images))
    n_batches = max(1, len(images) // batch_size)  # equal-size batches, remainder dropped
    saved = [b.momentum for b in bns]
    try:
        for t in range(1, n_batches + 1):
            for b in bns:
                b.momentum = (t - 1) / t
            x = tf.cast(images[(t - 1) * batch_size:t * batch_size], tf.float32)
            model(x, training=True)
    finally:
        for b, m in zip(bns, saved, strict=True):
            b.momentum = m
    return n_batches


def _all_layers(model):
    """Every layer of ``model``, nested models' layers included."""
    out = []
    for lyr in model.layers:
        out.append(lyr)
        if hasattr(lyr, "layers"):
            out.extend(_all_layers(lyr))
    return out


def train_network(model, images: np.ndarray, y_idx: np.ndarray, tr: np.ndarray, va: np.ndarray,
                  *, batch_size: int, epochs: int, learning_rate: float, patience: int,
                  class_weight, augment, seed: int, verbose: int, jit_compile: bool) -> dict:
    """Compile and train ``model`` (a softmax classifier of ``y_idx``) on ``images[tr]``.

    Parameters
    ----------
    model : keras.Model
        Built by :func:`morphocell.deep.models.build_model`; trained in place.
    images : uint8 array (n, S, S, 3)
    y_idx : int array (n,)
        Class index of every image.
    tr, va : int arrays
        Positions of the training and validation images (``va`` empty: no early stopping).
    batch_size, epochs, learning_rate, patience, class_weight
        As the :class:`~morphocell.deep.embedder.CNNEmbedder` parameters.
    augment : AugmentConfig or None
    seed : int
        Seeds the shuffle and the augmentation stream.
    verbose : int
        1: one line per epoch on stderr.
    jit_compile : bool
        XLA compilation (seconds of compile per fit; pays off on a GPU only).

    Returns
    -------
    dict
        ``history`` (per-epoch lists), ``train_time_s`` (the Keras loop), ``n_epochs``.
    """
    _, keras = _tf()
    k = int(np.max(y_idx)) + 1 if len(y_idx) else 0
    bs = int(batch_size)
    steps = max(1, math.ceil(len(tr) / bs))
    epochs = int(epochs)
    total = epochs * steps
    warm = min(steps, max(total - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warm else float(learning_rate),
        decay_steps=max(total - warm, 1), alpha=0.0,
        warmup_target=float(learning_rate) if warm else None, warmup_steps=warm)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile)
    train_ds = make_train_dataset(images[tr], y_idx[tr], bs, seed, augment)
    callbacks = [_progress_callback(int(verbose), len(tr), epochs)]
    val_ds = None
    if len(va):
        val_ds = make_eval_dataset(images[va], max(bs, 64), y_idx[va])
        callbacks.insert(0, keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=int(patience), restore_best_weights=True))
    cw = None
    if class_weight == "balanced":
        cnt = np.bincount(y_idx[tr], minlength=k).astype(float)
        cw = {i: (len(tr) / (k * c) if c else 0.0) for i, c in enumerate(cnt)}
    t0 = time.perf_counter()
    hist = model.fit(train_ds, epochs=epochs, steps_per_epoch=steps,
                     validation_data=val_ds, callbacks=callbacks, class_weight=cw,
                     shuffle=False, verbose=0)
    train_time = time.perf_counter() - t0
    history = {key: [float(v) for v in vals] for key, vals in hist.history.items()}
    history["learning_rate"] = [
        float(schedule(min(e * steps, total))) for e in range(len(hist.history["loss"]))]
    return {"history": history, "train_time_s": train_time,
            "n_epochs": len(hist.history["loss"])}
