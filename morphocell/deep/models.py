"""CNN architectures for :class:`~morphocell.deep.CNNEmbedder` (Keras 3, TensorFlow backend).

Every network has the same three-part shape, so that the embedder can treat them alike::

    input (S, S, 3) float32 in [0, 255]
      -> "backbone"   a keras.Model: architecture-specific preprocessing + convolutions,
                      ending in global average pooling
      -> "embedding"  Dense(embedding_dim) + ReLU          <- the embedding we export
      -> "dropout"    Dropout(0.2) (training only)
      -> "probs"      Dense(n_classes) + softmax, float32 (also under mixed precision)

Architectures
-------------
``"small-resnet"`` (default)
    A compact residual network written here (He et al. 2016, basic blocks): a 3x3 stride-2
    stem with 32 filters, then three stages of one residual block each (32, 64, 128 filters;
    stages 2 and 3 stride 2, 1x1 projection shortcut when the shape changes), every
    convolution followed by batch normalisation. About 0.35 M parameters with
    ``embedding_dim=256`` and 8 classes; trains from scratch on a CPU.
``"small-cnn"``
    A plain four-block VGG-style network (conv-BN-ReLU, max-pool) with 32/64/96/128 filters:
    the cheapest option for quick experiments.
``"efficientnetb0"``, ``"mobilenetv3small"``, ``"mobilenetv2"``, ``"resnet50"``, ``"densenet121"``
    ``keras.applications`` backbones (``include_top=False, pooling="avg"``), always built with
    ``weights=None``: morphocell never downloads anything at run time. ImageNet (or any other)
    weights can be given as a local file through ``CNNEmbedder(weights=PATH)``. Each gets the
    input scaling its published weights expect (EfficientNet and MobileNetV3 rescale inside
    the model; MobileNetV2 and DenseNet expect ``x / 127.5 - 1`` and the torch
    ``(x / 255 - mean) / std`` respectively; ResNet50 the caffe ``BGR - mean``), so a local
    ImageNet weights file behaves as in Keras.

All functions import Keras lazily: importing this module does not import TensorFlow.
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from ..errors import ModelFileError, MorphocellError

__all__ = ["ARCHITECTURES", "APPLICATIONS", "MIN_INPUT_SIZE", "build_model", "custom_objects",
           "load_backbone_weights", "model_from_bytes", "model_to_bytes"]

#: keras.applications backbones: name -> (constructor name in keras.applications, preprocessing)
APPLICATIONS = {
    "efficientnetb0": ("EfficientNetB0", "none"),
    "mobilenetv3small": ("MobileNetV3Small", "none"),
    "mobilenetv2": ("MobileNetV2", "tf"),
    "resnet50": ("ResNet50", "caffe"),
    "densenet121": ("DenseNet121", "torch"),
}
#: Every accepted ``architecture`` value.
ARCHITECTURES = ("small-resnet", "small-cnn", *APPLICATIONS)
#: Smallest input side each architecture accepts (keras.applications need 32 px).
MIN_INPUT_SIZE = {"small-resnet": 16, "small-cnn": 16, **{k: 32 for k in APPLICATIONS}}


@lru_cache(maxsize=1)
def custom_objects() -> dict:
    """The custom Keras layers used by morphocell models (needed to load a ``.keras`` file).

    Defined on first call so that Keras is imported only when needed.
    """
    import keras

    @keras.saving.register_keras_serializable(package="morphocell")
    class ChannelAffine(keras.layers.Layer):
        """``y[..., c] = x[..., perm[c]] * scale[c] + offset[c]``: fixed per-channel input
        preprocessing (channel reorder, mean/std normalisation) with no trainable weights."""

        def __init__(self, scale=(1.0, 1.0, 1.0), offset=(0.0, 0.0, 0.0), perm=(0, 1, 2),
                     **kwargs):
            super().__init__(**kwargs)
            self.scale = tuple(float(s) for s in scale)
            self.offset = tuple(float(o) for o in offset)
            self.perm = tuple(int(p) for p in perm)

        def call(self, x):
            from keras import ops

            x = ops.take(x, list(self.perm), axis=-1)
            scale = ops.cast(ops.convert_to_tensor(self.scale), x.dtype)
            offset = ops.cast(ops.convert_to_tensor(self.offset), x.dtype)
            return x * scale + offset

        def get_config(self):
            cfg = super().get_config()
            cfg.update(scale=list(self.scale), offset=list(self.offset), perm=list(self.perm))
            return cfg

    return {"morphocell>ChannelAffine": ChannelAffine, "ChannelAffine": ChannelAffine}


def _preprocess_layer(kind: str):
    """Input scaling matching ``keras.applications.<family>.preprocess_input``."""
    import keras

    if kind == "none":
        return None
    if kind == "unit":
        return keras.layers.Rescaling(1.0 / 255.0, name="scale")
    if kind == "tf":
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")
    affine = custom_objects()["ChannelAffine"]
    if kind == "caffe":  # RGB -> BGR, subtract the ImageNet BGR means
        return affine(scale=(1.0, 1.0, 1.0), offset=(-103.939, -116.779, -123.68),
                      perm=(2, 1, 0), name="scale")
    if kind == "torch":  # (x / 255 - mean) / std
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        return affine(scale=tuple(1.0 / (255.0 * s) for s in std),
                      offset=tuple(-m / s for m, s in zip(mean, std, strict=True)), name="scale")
    raise ValueError(kind)  # pragma: no cover


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, relu: bool = True):
    import keras
    from keras import layers

    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal",
                      kernel_regularizer=keras.regularizers.L2(1e-5), name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _res_block(x, filters: int, stride: int, name: str):
    """Basic residual block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``."""
    from keras import layers

    shortcut = x
    y = _conv_bn(x, filters, 3, stride, f"{name}_a")
    y = _conv_bn(y, filters, 3, 1, f"{name}_b", relu=False)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_proj", relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _small_backbone(architecture: str, input_size: int):
    import keras
    from keras import layers

    inp = keras.Input((input_size, input_size, 3), name="image")
    x = _preprocess_layer("unit")(inp)
    if architecture == "small-resnet":
        x = _conv_bn(x, 32, 3, 2, "stem")
        for i, (f, s) in enumerate(((32, 1), (64, 2), (128, 2))):
            x = _res_block(x, f, s, f"stage{i + 1}")
    else:  # small-cnn
        for i, f in enumerate((32, 64, 96, 128)):
            x = _conv_bn(x, f, 3, 1, f"block{i + 1}")
            if i < 3:
                x = layers.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, x, name="backbone")


def _application_backbone(architecture: str, input_size: int):
    import keras

    ctor_name, prep = APPLICATIONS[architecture]
    ctor = getattr(keras.applications, ctor_name)
    kwargs = dict(include_top=False, weights=None, input_shape=(input_size, input_size, 3),
                  pooling="avg")
    if architecture == "mobilenetv3small":
        kwargs["include_preprocessing"] = True
    core = ctor(**kwargs)
    inp = keras.Input((input_size, input_size, 3), name="image")
    layer = _preprocess_layer(prep)
    x = layer(inp) if layer is not None else inp
    x = core(x)
    return keras.Model(inp, x, name="backbone")


def build_model(architecture: str, input_size: int, n_classes: int, embedding_dim: int,
                dropout: float = 0.2):
    """Build (uncompiled, randomly initialised) ``backbone -> embedding -> probs``.

    Parameters
    ----------
    architecture : str
        One of :data:`ARCHITECTURES`.
    input_size : int
        Side ``S`` of the square ``(S, S, 3)`` input, pixel values in ``[0, 255]``.
    n_classes : int
        Width of the softmax output.
    embedding_dim : int
        Width of the penultimate ``"embedding"`` layer (the exported features).

    Returns
    -------
    keras.Model
        Layers named ``"backbone"``, ``"embedding"``, ``"probs"``. Built under the current
        Keras dtype policy (``mixed_float16`` on a GPU, see the embedder); ``"probs"`` is
        always float32.
    """
    import keras
    from keras import layers

    if architecture not in ARCHITECTURES:
        raise MorphocellError(f"unknown architecture {architecture!r}; choose one of "
                              f"{', '.join(ARCHITECTURES)}")
    if int(input_size) < MIN_INPUT_SIZE[architecture]:
        raise MorphocellError(f"input_size={input_size} is too small for {architecture!r} "
                              f"(minimum {MIN_INPUT_SIZE[architecture]})")
    if int(embedding_dim) < 1 or int(n_classes) < 2:
        raise MorphocellError(f"need embedding_dim >= 1 and at least 2 classes "
                              f"(got {embedding_dim}, {n_classes})")
    if architecture in APPLICATIONS:
        backbone = _application_backbone(architecture, int(input_size))
    else:
        backbone = _small_backbone(architecture, int(input_size))
    inp = keras.Input((int(input_size), int(input_size), 3), name="image")
    x = backbone(inp)
    emb = layers.Dense(int(embedding_dim), activation="relu", name="embedding")(x)
    x = layers.Dropout(dropout, name="dropout")(emb)
    out = layers.Dense(int(n_classes), activation="softmax", dtype="float32", name="probs")(x)
    return keras.Model(inp, out, name=f"morphocell_{architecture.replace('-', '_')}")


# ----------------------------------------------------------------------------- files

def model_to_bytes(model) -> bytes:
    """A Keras model in the Keras native format (``.keras`` file content)."""
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.keras"
        model.save(p)
        return p.read_bytes()


def model_from_bytes(data: bytes, name: str = "<bytes>"):
    """The Keras model of :func:`model_to_bytes` output, loaded with ``safe_mode=True`` (no
    code from the file runs); :class:`ModelFileError` naming ``name`` otherwise."""
    from ._training import _tf

    _, keras = _tf()

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.keras"
        p.write_bytes(data)
        try:
            return keras.models.load_model(p, custom_objects=custom_objects(), compile=False,
                                           safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - Keras raises many types on bad files
            raise ModelFileError(f"not a loadable Keras model ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})",
                                 name) from None


def load_backbone_weights(backbone, path: str | os.PathLike, architecture: str) -> None:
    """Initialise ``backbone`` from a local file; never downloads anything.

    Accepted: a saved :class:`CNNEmbedder` (``save`` / ``to_bytes``), a ``.keras`` model
    file with a layer named ``backbone`` (e.g. one of our models), or a Keras weights file
    (``.weights.h5`` / legacy ``.h5``, e.g. the ``*_notop.h5`` ImageNet files of
    keras.applications downloaded by hand) matching the backbone. Anything else raises
    :class:`ModelFileError` naming the file.
    """
    from .embedder import _HEADER, _MODEL

    p = Path(path)
    if not p.is_file():
        raise ModelFileError("weights file not found", p)
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
            if _HEADER in names:  # a saved CNNEmbedder
                model = model_from_bytes(zf.read(_MODEL), os.fspath(p))
            elif "config.json" in names:  # a plain .keras file
                model = model_from_bytes(p.read_bytes(), os.fspath(p))
            else:
                raise ModelFileError("zip file is neither a saved CNNEmbedder nor a .keras "
                                     "model", p)
        try:
            src = model.get_layer("backbone")
        except ValueError:
            raise ModelFileError("the model in this file has no 'backbone' layer; cannot "
                                 f"initialise a {architecture!r} backbone from it", p) from None
        src_w, dst_w = src.get_weights(), backbone.get_weights()
        shapes_src = [w.shape for w in src_w]
        shapes_dst = [w.shape for w in dst_w]
        if shapes_src != shapes_dst:
            first = next((i for i, (a, b) in enumerate(zip(shapes_src, shapes_dst)) if a != b),
                         min(len(shapes_src), len(shapes_dst)))
            raise ModelFileError(
                f"incompatible weights: the file's backbone has {len(src_w)} arrays "
                f"({sum(w.size for w in src_w)} values), a {architecture!r} backbone needs "
                f"{len(dst_w)} ({sum(w.size for w in dst_w)}); first mismatch at array {first}",
                p)
        backbone.set_weights(src_w)
        return
    if not p.name.endswith(".h5"):
        raise ModelFileError("unsupported weights file: expected a saved CNNEmbedder, a .keras "
                             "model or a Keras .weights.h5 / .h5 weights file", p)
    # keras.applications backbones are wrapped: the file's weights belong to the core model
    targets = [lyr for lyr in backbone.layers if hasattr(lyr, "layers")] or [backbone]
    errors = []
    for target in (*targets, backbone):
        try:
            target.load_weights(p)
            return
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise ModelFileError(f"incompatible weights file for a {architecture!r} backbone "
                         f"({errors[0]})", p)
