"""U-Net segmentation of nucleus and cytoplasm (Keras 3; the ``deep`` extra).

The network predicts 3 classes per pixel — 0 background, 1 cytoplasm, 2 nucleus — on the
image resized to ``INPUT_SIZE`` x ``INPUT_SIZE`` (128; area interpolation). Class
probabilities are resized back to the image's size (bilinear) before the arg-max, then the
post-processing: the cell component nearest the image centre is kept (holes filled), the nucleus
is restricted to that cell (pinholes filled, specks dropped) and, for images larger than
the network's input, its boundary is re-decided at the image's resolution from the image's
own colours (:func:`refine_nucleus`).

Training (:func:`train_unet`, CLI ``morphocell train-segmenter``) uses the expert masks of
segwbc plus optional pseudo-labels: PBC images that the classical method segments
*confidently* (its masks barely change when its smoothing changes, the cell does not touch
the border). Loss: categorical cross-entropy + (1 - mean soft Dice over the 3 classes).
Augmentation: flips, 90-degree rotations, scale (0.85-1.15 zoom), brightness / contrast /
hue / saturation jitter for stain variation. Split used for reporting: images with an odd
numeric id in each segwbc dataset are never used for training or model selection
(the classical method is reported on the same held-out ids).

TensorFlow is imported only inside these functions. A GPU is used automatically when
TensorFlow sees one (with mixed precision); otherwise the CPU.
"""
from __future__ import annotations

import os
import re
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .._utils import DIHEDRAL, dihedral
from ..errors import ModelFileError, SegmentationError
from .masks import CellMasks

__all__ = ["INPUT_SIZE", "build_unet", "load_unet", "predict_probabilities", "segment_unet",
           "segment_unet_batch", "refine_nucleus", "train_unet", "load_segwbc", "pseudo_labels",
           "BUNDLED_WEIGHTS"]

INPUT_SIZE = 128
#: initial Adam learning rate of :func:`train_unet` (cosine-decayed to 5% of it)
LEARNING_RATE = 2e-3
N_CLASSES = 3
#: Shipped weights (if present), produced by the command in docs/segmentation.md.
BUNDLED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "unet_segwbc.keras"


def _keras():
    try:
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SegmentationError(
            "the U-Net needs TensorFlow/Keras 3: pip install 'morphocell[deep]'") from exc
    return keras


def _use_gpu_policy(keras) -> bool:
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        keras.mixed_precision.set_global_policy("mixed_float16")
        return True
    return False


def build_unet(input_size: int = INPUT_SIZE, base_filters: int = 16, depth: int = 4,
               n_classes: int = N_CLASSES):
    """A compact U-Net: ``depth`` down/up levels of two 3x3 conv + batch-norm + ReLU."""
    keras = _keras()
    from keras import layers

    inp = keras.Input((input_size, input_size, 3), name="image")
    x = inp
    skips = []
    f = base_filters
    for _ in range(depth):
        x = _conv_block(layers, x, f)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
        f *= 2
    x = _conv_block(layers, x, f)
    for skip in reversed(skips):
        f //= 2
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([x, skip])
        x = _conv_block(layers, x, f)
    out = layers.Conv2D(n_classes, 1, name="logits")(x)
    out = layers.Activation("softmax", dtype="float32", name="probabilities")(out)
    return keras.Model(inp, out, name="morphocell_unet")


def _conv_block(layers, x, f):
    for _ in range(2):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    return x


def load_unet(path: str | os.PathLike):
    """Load U-Net weights saved by :func:`train_unet` (Keras native ``.keras`` file).

    Raises :class:`ModelFileError` for a missing, unreadable or incompatible file. Loading uses
    Keras's ``safe_mode`` (no arbitrary code from the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError("U-Net weights file not found", path)
    keras = _keras()
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for bad files
        raise ModelFileError(f"not a readable Keras model file ({type(exc).__name__}: "
                             f"{str(exc)[:200]})", path) from None
    shp_in = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else None
    shp_out = tuple(model.output_shape[1:]) if hasattr(model, "output_shape") else None
    if (shp_in is None or len(shp_in) != 3 or shp_in[2] != 3 or shp_in[0] != shp_in[1]
            or shp_out is None or shp_out[-1] != N_CLASSES):
        raise ModelFileError(f"incompatible U-Net: expects input (S, S, 3) and {N_CLASSES} "
                             f"output classes, got input {shp_in} and output {shp_out}", path)
    return model


@lru_cache(maxsize=4)
def _cached_model(path: str, mtime: float):
    return load_unet(path)


def _resolve_model(model):
    if model is None:
        if not BUNDLED_WEIGHTS.is_file():
            raise SegmentationError(
                "method 'unet' needs weights: pass model=PATH (CLI: --model PATH); train them "
                "with 'morphocell train-segmenter --out unet.keras'")
        model = BUNDLED_WEIGHTS
    if isinstance(model, (str, os.PathLike)):
        p = str(Path(model).resolve())
        if not os.path.isfile(p):
            raise ModelFileError("U-Net weights file not found", p)
        return _cached_model(p, os.path.getmtime(p))
    return model


def _prepare(images: list[np.ndarray], size: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
                     for im in images]).astype(np.float32) / 255.0


def _untransform(p: np.ndarray, k: int, flip: bool) -> np.ndarray:
    return np.rot90(p[:, ::-1] if flip else p, -k)


def predict_probabilities(model, images: list[np.ndarray], batch_size: int = 32,
                          tta: bool = False) -> list[np.ndarray]:
    """Per-pixel class probabilities ``(H, W, 3)`` at each image's own size.

    ``tta=True`` averages the probabilities over the 8 rotations/flips of each image
    (test-time augmentation: 8x the time, smoother and slightly more accurate boundaries).
    """
    import cv2

    model = _resolve_model(model)
    size = int(model.input_shape[1])
    views = DIHEDRAL if tta else DIHEDRAL[:1]
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        acc = [0.0] * len(chunk)
        for k, flip in views:
            x = _prepare([dihedral(im, k, flip) for im in chunk], size)
            prob = np.asarray(model(x, training=False), dtype=np.float32)
            for j, p in enumerate(prob):
                acc[j] = acc[j] + _untransform(p, k, flip)
        for im, p in zip(chunk, acc, strict=True):
            h, w = im.shape[:2]
            p = np.ascontiguousarray(p / len(views), dtype=np.float32)
            out.append(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR))
    return out


def _central_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n <= 1:
        return mask
    h, w = mask.shape
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0)
    mins = ndi.minimum(dist, lab, index=np.arange(1, n + 1))
    sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
    # nearest the centre; among components touching the centre region, the largest
    best = int(np.lexsort((-sizes, np.round(mins / 4.0)))[0]) + 1
    return lab == best


def postprocess(prob: np.ndarray, image: np.ndarray | None = None,
                refine_px: float = 0.0) -> CellMasks:
    """Arg-max, keep the central cell (holes filled), restrict the nucleus to the cell, fill
    only its pinholes (under ``HOLE_FRACTION`` of its area: the space a lobed nucleus wraps
    around is cytoplasm), drop nucleus specks (components under ``SPECK_FRACTION`` of the
    largest); with ``image`` and ``refine_px > 0``, re-decide the nucleus boundary at the
    image's resolution (:func:`refine_nucleus`, a band of ``refine_px`` pixels)."""
    label = np.argmax(prob, axis=-1)
    cell = label > 0
    if not cell.any():
        return CellMasks.empty(label.shape, reason="U-Net found no cell")
    cell = ndi.binary_fill_holes(_central_component(cell))
    nucleus = _drop_specks(_fill_pinholes((label == 2) & cell))
    info = {"method": "unet"}
    if image is not None and refine_px > 0:
        nucleus = refine_nucleus(image, prob, nucleus, cell, refine_px)
        info["refined_px"] = float(refine_px)
    return CellMasks(nucleus, cell & ~nucleus, found=True, info=info)


#: Holes of the nucleus smaller than this share of its area are filled (pinholes); larger
#: ones are kept as cytoplasm. Filling every hole (as the classical method does) filled the
#: cytoplasm between the lobes of eosinophils and band neutrophils: mean nucleus Dice on the
#: even (training) segwbc ids 0.9658 -> 0.9665 (dataset1), 0.9675 -> 0.9696 (dataset2)
#: without the fill, same or better on the held-out odd ids (docs/segmentation.md).
HOLE_FRACTION = 0.005


def _fill_pinholes(mask: np.ndarray) -> np.ndarray:
    filled = ndi.binary_fill_holes(mask)
    holes = filled & ~mask
    if not holes.any():
        return mask
    lab, _ = ndi.label(holes)
    sizes = np.bincount(lab.ravel())
    small = sizes < HOLE_FRACTION * max(int(mask.sum()), 1)
    small[0] = False
    return mask | small[lab]


#: When ``refine="auto"``: refine the nucleus boundary when the image's shorter side is at
#: least this many times the network's input size (the network saw a shrunken image).
REFINE_MIN_SCALE = 1.5
#: Weight of the network's nucleus log-odds next to the colour log-likelihood ratio, and the
#: Gaussian smoothing (image pixels) of the optical density, in :func:`refine_nucleus`.
REFINE_NET_WEIGHT = 3.0
REFINE_SIGMA = 0.7


def refine_nucleus(image: np.ndarray, prob: np.ndarray, nucleus: np.ndarray, cell: np.ndarray,
                   band_px: float) -> np.ndarray:
    """Re-decide the nucleus boundary at the image's own resolution.

    The network sees the image shrunk to its input size, so its boundary is only as sharp as
    one network pixel (``band_px`` image pixels). Within ``band_px`` of the arg-max nucleus
    boundary (inside the cell) each pixel is re-classified by a per-image two-class linear
    discriminant on optical density ``-log((I + 1) / 256)`` (Gaussian, ``REFINE_SIGMA``),
    fitted on the confident nucleus (farther than ``band_px`` inside) and the cytoplasm next
    to it (``band_px`` to ``4 band_px`` outside): nucleus where
    ``LLR_colour + REFINE_NET_WEIGHT * logit(p_nucleus) > 0``. Then pinholes are filled and
    specks dropped again. Too few pixels on either side: the nucleus is returned unchanged.
    """
    import cv2

    n0 = nucleus.astype(np.uint8)
    din = cv2.distanceTransform(n0, cv2.DIST_L2, 5)
    dout = cv2.distanceTransform(1 - n0, cv2.DIST_L2, 5)
    band = (((din > 0) & (din <= band_px)) | ((dout > 0) & (dout <= band_px))) & cell
    core_n = din > band_px
    core_c = (dout > band_px) & (dout <= 4 * band_px) & cell
    if core_n.sum() < 20 or core_c.sum() < 20 or not band.any():
        return nucleus
    od = -np.log((image.astype(np.float32) + 1.0) / 256.0)
    if REFINE_SIGMA > 0:
        od = cv2.GaussianBlur(od, (0, 0), REFINE_SIGMA)
    xn, xc = od[core_n].astype(np.float64), od[core_c].astype(np.float64)
    mn, mc = xn.mean(0), xc.mean(0)
    pooled = ((xn - mn).T @ (xn - mn) + (xc - mc).T @ (xc - mc)) / (len(xn) + len(xc) - 2)
    wv = np.linalg.solve(pooled + 1e-6 * np.eye(3), mn - mc)
    xb = od[band].astype(np.float64)
    llr = xb @ wv - 0.5 * float((mn + mc) @ wv)
    pb = prob[band]
    pn = np.clip(pb[:, 2] / np.maximum(pb.sum(-1), 1e-6), 1e-4, 1 - 1e-4)
    out = nucleus.copy()
    out[band] = llr + REFINE_NET_WEIGHT * np.log(pn / (1.0 - pn)) > 0
    return _drop_specks(_fill_pinholes(out & cell))


#: Nucleus components smaller than this share of the largest one are dropped (dark granules
#: of eosinophils / immature granulocytes that the network calls "nucleus" in specks).
SPECK_FRACTION = 0.05


def _drop_specks(nucleus: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(nucleus)
    if n <= 1:
        return nucleus
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.flatnonzero(sizes >= SPECK_FRACTION * sizes.max()) + 1
    return np.isin(lab, keep)


def _refine_px(shape, size: int, refine) -> float:
    scale = min(shape[:2]) / float(size)
    if refine is None or refine == "auto":
        return scale if scale >= REFINE_MIN_SCALE else 0.0
    return max(scale, 1.0) if refine else 0.0


def segment_unet_batch(images: list[np.ndarray], model=None, batch_size: int = 32,
                       tta: bool = False, refine: bool | str = "auto") -> list[CellMasks]:
    """Segment many images in batches (faster than one by one).

    ``refine``: re-decide the nucleus boundary at the image's resolution
    (:func:`refine_nucleus`); ``"auto"`` (default) does it when the image's shorter side is at
    least ``REFINE_MIN_SCALE`` times the network's input size, ``True`` / ``False`` always /
    never.
    """
    if refine not in (True, False, "auto", None):
        raise SegmentationError(f"refine must be True, False or 'auto', not {refine!r}")
    model = _resolve_model(model)
    size = int(model.input_shape[1])
    probs = predict_probabilities(model, images, batch_size, tta)
    return [postprocess(p, im, _refine_px(im.shape, size, refine))
            for p, im in zip(probs, images, strict=True)]


def segment_unet(image: np.ndarray, model=None, tta: bool = False, refine: bool | str = "auto",
                 **params) -> CellMasks:
    """Segment one image with a U-Net (``model``: a path, a loaded model, or None for the
    bundled weights; ``tta``: average over the 8 rotations/flips; ``refine``: see
    :func:`segment_unet_batch`)."""
    if params:
        raise SegmentationError(f"unknown parameter(s) for method 'unet': {sorted(params)}")
    return segment_unet_batch([image], model, tta=tta, refine=refine)[0]


# ---- data -------------------------------------------------------------------------------

def _numeric_id(name: str) -> int:
    m = re.match(r"(\d+)", name)
    return int(m.group(1)) if m else -1


def load_segwbc(root: str | os.PathLike, held_out: bool | None = None):
    """Expert-annotated images of ``root/dataset*/NNN_image.png`` with ``NNN_mask.png``.

    Returns a list of ``(image, label, dataset, image_id)`` with ``label`` in 0/1/2.
    ``held_out=True`` keeps only odd ids (the evaluation half), ``False`` only even ids (the
    training half), ``None`` all.
    """
    from PIL import Image

    from ..io import read_image

    root = Path(root)
    dirs = sorted(d for d in root.glob("dataset*") if d.is_dir()) or [root]
    items = []
    for d in dirs:
        for img_p in sorted(d.glob("*_image.png")):
            iid = img_p.name[: -len("_image.png")]
            if held_out is not None and (_numeric_id(iid) % 2 == 1) != held_out:
                continue
            mask_p = img_p.with_name(f"{iid}_mask.png")
            if not mask_p.is_file():
                continue
            m = CellMasks.from_label_image(np.asarray(Image.open(mask_p)))
            label = np.zeros(m.shape, np.uint8)
            label[m.cytoplasm] = 1
            label[m.nucleus] = 2
            items.append((read_image(img_p), label, d.name, iid))
    if not items:
        raise SegmentationError(f"no *_image.png with *_mask.png found under {root}")
    return items


def pseudo_labels(pbc_root: str | os.PathLike, n: int = 800, random_state: int = 0,
                  stability: float = 0.95):
    """Pseudo-labelled PBC images: the classical method's masks, kept only when confident.

    Confident = a cell was found, it does not touch the image border, and the masks with
    smoothing sigma 1.0 and 2.0 agree (Dice >= ``stability`` for nucleus and cell). Images are
    drawn from the ``train`` rows of ``pbc_split.csv`` when it sits next to ``pbc_root``
    (never from ``test`` rows), otherwise from the folder.
    """
    import csv

    from ..io import load_folder, read_image
    from . import segment
    from .metrics import dice

    pbc_root = Path(pbc_root)
    split = pbc_root.parent / "pbc_split.csv"
    if split.is_file():
        rows = [r for r in csv.DictReader(open(split)) if r["split"] == "train"]
        paths = [str(pbc_root.parent / r["path"]) for r in rows]
    else:
        paths = load_folder(pbc_root)[0]
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(paths))
    out = []
    for i in order:
        if len(out) >= n:
            break
        img = read_image(paths[i])
        a = segment(img, sigma=1.0)
        if not a.found:
            continue
        cell = a.cell
        if cell[0].any() or cell[-1].any() or cell[:, 0].any() or cell[:, -1].any():
            continue
        b = segment(img, sigma=2.0)
        if not b.found or dice(a.nucleus, b.nucleus) < stability or dice(a.cell, b.cell) < \
                stability:
            continue
        label = np.zeros(a.shape, np.uint8)
        label[a.cytoplasm] = 1
        label[a.nucleus] = 2
        out.append((img, label, "pbc-pseudo", Path(paths[i]).stem))
    return out


# ---- training ---------------------------------------------------------------------------

def balance_datasets(items, repeat: int = 1, random_state: int = 0):
    """Repeat expert items so that every dataset (``item[2]``) appears ``repeat`` times as
    often as the largest one: a dataset of ``n_d`` items gets ``repeat * n_max`` entries
    (every item ``repeat * n_max // n_d`` times, the remainder drawn without replacement
    with ``random_state``). Without it a small dataset (segwbc dataset2: 22 even ids next to
    dataset1's 150) is a few percent of every epoch."""
    groups: dict[str, list] = {}
    for it in items:
        groups.setdefault(it[2], []).append(it)
    if not groups:
        return []
    target = repeat * max(len(g) for g in groups.values())
    rng = np.random.default_rng(random_state)
    out = []
    for name in sorted(groups):
        g = groups[name]
        out.extend(g * (target // len(g)))
        extra = rng.choice(len(g), size=target % len(g), replace=False)
        out.extend(g[i] for i in sorted(extra))
    return out


def _resize_pairs(items, size):
    import cv2

    x = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
                  for im, *_ in items]).astype(np.float32) / 255.0
    y = np.stack([cv2.resize(lab, (size, size), interpolation=cv2.INTER_NEAREST)
                  for _, lab, *_ in items]).astype(np.int32)
    return x, y


def _augment_fn(tf, seed: int):  # noqa: ARG001 - seed enters through the per-example pair
    def aug(x, y, s):
        # s: per-example stateless seed pair
        y = tf.one_hot(y, N_CLASSES)
        xy = tf.concat([x, y], axis=-1)
        xy = tf.image.stateless_random_flip_left_right(xy, s)
        xy = tf.image.stateless_random_flip_up_down(xy, s + 1)
        k = tf.random.stateless_uniform([], s + 2, 0, 4, dtype=tf.int32)
        xy = tf.image.rot90(xy, k)
        size = tf.shape(xy)[0]
        zoom = tf.random.stateless_uniform([], s + 3, 0.85, 1.15)
        new = tf.cast(tf.cast(size, tf.float32) * zoom, tf.int32)
        xy = tf.image.resize(xy, [new, new], method="nearest")
        xy = tf.image.resize_with_crop_or_pad(xy, size, size)
        x, y = xy[..., :3], xy[..., 3:]
        # padding added zeros: make padded background white-ish like a slide, label background
        pad = tf.cast(tf.reduce_sum(y, axis=-1, keepdims=True) < 0.5, tf.float32)
        x = x + pad * 0.92
        y = y + pad * tf.one_hot(0, N_CLASSES)
        x = tf.image.stateless_random_brightness(x, 0.08, s + 4)
        x = tf.image.stateless_random_contrast(x, 0.8, 1.2, s + 5)
        x = tf.image.stateless_random_hue(x, 0.05, s + 6)
        x = tf.image.stateless_random_saturation(x, 0.75, 1.3, s + 7)
        return tf.clip_by_value(x, 0.0, 1.0), y
    return aug


def _loss(keras):
    from keras import ops

    cce = keras.losses.CategoricalCrossentropy()

    def dice_ce(y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        inter = ops.sum(y_true * y_pred, axis=(1, 2))
        denom = ops.sum(y_true + y_pred, axis=(1, 2))
        dice = (2.0 * inter + 1.0) / (denom + 1.0)
        return cce(y_true, y_pred) + (1.0 - ops.mean(dice))
    return dice_ce


def train_unet(train_items, val_items, *, input_size: int = INPUT_SIZE, base_filters: int = 16,
               depth: int = 4, epochs: int = 40, batch_size: int = 16,
               learning_rate: float = LEARNING_RATE, patience: int = 8, random_state: int = 0,
               verbose: int = 1, init=None):
    """Train a U-Net; returns ``(model, history_dict)``.

    ``train_items`` / ``val_items``: lists of ``(image, label)`` (+ anything after) with labels
    0/1/2. The best epoch on the validation loss is kept (early stopping with restore).
    ``init``: a weights file (:func:`load_unet`) or a Keras U-Net to start from instead of a
    fresh network (fine-tuning; it is copied, not changed); its input size and architecture
    then replace ``input_size``, ``base_filters`` and ``depth``.
    """
    keras = _keras()
    import tensorflow as tf

    keras.utils.set_random_seed(random_state)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - not available on every build
        pass
    gpu = _use_gpu_policy(keras)
    start = load_unet(init) if isinstance(init, (str, os.PathLike)) else init
    if start is not None:
        input_size = int(start.input_shape[1])
    x, y = _resize_pairs(train_items, input_size)
    xv, yv = _resize_pairs(val_items, input_size)
    n = len(x)
    aug = _augment_fn(tf, random_state)
    rs = tf.constant(random_state, tf.int64)
    # an endless shuffled stream; example k of the stream gets the stateless seed (k, seed), so
    # every epoch sees new augmentations and the whole run is reproducible
    ds = (tf.data.Dataset.from_tensor_slices((x, y))
          .shuffle(n, seed=random_state, reshuffle_each_iteration=True)
          .repeat()
          .enumerate()
          .map(lambda k, xy: aug(xy[0], xy[1], tf.stack([k, rs])),
               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    steps_per_epoch = max(1, int(np.ceil(n / batch_size)))
    vds = (tf.data.Dataset.from_tensor_slices((xv, tf.one_hot(yv, N_CLASSES)))
           .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    if start is None:
        model = build_unet(input_size, base_filters, depth)
    else:  # a fresh copy under this run's dtype policy, with the file's weights
        model = keras.Model.from_config(start.get_config())
        model.set_weights(start.get_weights())
    steps = steps_per_epoch * epochs
    sched = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(sched), loss=_loss(keras),
                  metrics=["accuracy"])
    cbs = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                         restore_best_weights=True)]
    t0 = time.perf_counter()
    hist = model.fit(ds, validation_data=vds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                     callbacks=cbs, shuffle=False,
                     verbose=2 if verbose else 0)
    h = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    h["train_seconds"] = time.perf_counter() - t0
    h["gpu"] = gpu
    h["n_train"] = n
    h["n_val"] = len(xv)
    return model, h


def save_unet(model, path: str | os.PathLike) -> None:
    """Save in Keras native format, atomically."""
    from .._utils import atomic_path

    keras = _keras()
    # an uncompiled copy: the file holds the network only, not the optimizer's state
    # (Adam's moments would triple its size)
    bare = keras.Model.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    with atomic_path(Path(path).with_suffix(".keras")) as tmp:
        bare.save(tmp)
