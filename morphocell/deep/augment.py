"""Training-time augmentation for blood-cell crops, as stateless TensorFlow ops.

A cell has no preferred orientation and stains vary between slides and labs, so each training
image is, independently and on the fly:

* flipped left-right and up-down, each with probability 1/2;
* rotated by ``k * 90`` degrees, ``k`` uniform in {0, 1, 2, 3} (with the flips: all 8
  symmetries of the square, exactly, no interpolation);
* rotated by a small angle ``theta ~ U(-max_rotation, +max_rotation)`` (bilinear, reflected
  border, so no black corners appear);
* colour-jittered: brightness ``x + d``, ``d ~ U(-b, b)``; contrast
  ``(x - mean) * c + mean``, ``c ~ U(1 - c0, 1 + c0)``; hue shift ``h ~ U(-h0, h0)`` (fraction of
  the colour wheel); saturation ``* s``, ``s ~ U(s0, s1)``; the result is clipped to
  ``[0, 1]`` (``tf.image.stateless_random_*`` semantics, applied to ``x / 255``);
* optionally (off in :data:`STANDARD`, on in :data:`STAIN`), another lab's optics and stain:
  gamma ``x ** g``, ``g ~ U(g0, g1)``, then a per-channel gain (illumination tint)
  ``x_c * t_c``, ``t_c ~ U(t0, t1)``, clipped to ``[0, 1]``.

Two presets: :data:`STANDARD` (``CNNEmbedder(augment=True)``: mild jitter within one lab's
stain) and :data:`STAIN` (``augment="stain"``: the stain augmentation ranges of
:data:`morphocell.preprocess.STAIN_AUGMENT` -- hue, saturation, gamma, tint -- without its
blur and rescaling, which have no place at the network's fixed input size; built by
:meth:`AugmentConfig.stain`, so the ranges are defined once).

Every random draw comes from ``tf.random.stateless_*`` ops keyed by ``(random_state, i)``
where ``i`` counts the images streamed so far (across epochs). The augmented stream is
therefore a pure function of the seed: identical in two runs, whatever the number of threads
that ``tf.data`` uses to map it in parallel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..preprocess.augment import STAIN_AUGMENT, StainAugmentConfig

__all__ = ["AugmentConfig", "augment_image", "STANDARD", "STAIN", "augment_config"]


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation (see the module docstring for the formulas).

    ``saturation``, ``gamma`` and ``tint`` are ranges ``(low, high)``, as in
    :class:`~morphocell.preprocess.StainAugmentConfig`; ``brightness``, ``contrast`` and
    ``hue`` are half-widths around no change.
    """

    flips: bool = True
    rot90: bool = True
    max_rotation: float = 15.0  # degrees
    brightness: float = 0.08
    contrast: float = 0.15
    hue: float = 0.03
    saturation: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (1.0, 1.0)
    tint: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def stain(cls, ranges: StainAugmentConfig = STAIN_AUGMENT, **geometry) -> AugmentConfig:
        """The standard geometry and brightness / contrast jitter with the colour ranges of a
        stain augmentation (``ranges.colour_only()``: hue, saturation, gamma, tint; blur and
        rescaling are not applied to the network's fixed-size input)."""
        colour = ranges.colour_only()
        return cls(hue=colour.hue, saturation=tuple(colour.saturation),
                   gamma=tuple(colour.gamma), tint=tuple(colour.tint), **geometry)


#: ``CNNEmbedder(augment=True)``: mild colour jitter.
STANDARD = AugmentConfig()
#: ``CNNEmbedder(augment="stain")``: other labs' stains and optics
#: (:data:`morphocell.preprocess.STAIN_AUGMENT`, colour part).
STAIN = AugmentConfig.stain()


def augment_config(augment) -> AugmentConfig | None:
    """The configuration a ``CNNEmbedder(augment=...)`` value stands for (``None``: no
    augmentation): ``True`` / ``"standard"`` -> :data:`STANDARD`, ``"stain"`` ->
    :data:`STAIN`, ``False`` / ``"none"`` -> ``None``. (Names rather than config objects, so
    the parameter stays JSON in a saved embedder.)"""
    from ..errors import MorphocellError

    presets = {"standard": STANDARD, "stain": STAIN, "none": None}
    if isinstance(augment, str):
        if augment in presets:
            return presets[augment]
    elif isinstance(augment, (bool, int)):
        return STANDARD if augment else None
    raise MorphocellError(f"augment={augment!r}: expected True, False, 'standard', 'stain' "
                          "or 'none'")


def _rotate(image, angle, tf):
    """Rotate an (S, S, 3) float image by ``angle`` radians about its centre (bilinear,
    reflected border) with ``ImageProjectiveTransformV3``.

    The transform maps output pixel (x, y) to input ``(a0 x + a1 y + a2, b0 x + b1 y + b2)``
    with ``[a0 a1; b0 b1] = [cos -sin; sin cos]`` and the offsets chosen so the centre
    ``((S-1)/2, (S-1)/2)`` is fixed.
    """
    s = tf.cast(tf.shape(image)[0], tf.float32)
    c = (s - 1.0) / 2.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    a2 = c - cos * c + sin * c
    b2 = c - sin * c - cos * c
    transform = tf.stack([cos, -sin, a2, sin, cos, b2, 0.0, 0.0])[None, :]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    return out[0]


def augment_image(image, seed, config: AugmentConfig = STANDARD):
    """Augment one ``(S, S, 3)`` image (any real dtype, values in [0, 255]).

    Parameters
    ----------
    image : tf.Tensor
    seed : tf.Tensor, shape (2,), int32 or int64
        Stateless seed; the same seed gives the same output.
    config : AugmentConfig
        What to apply (default :data:`STANDARD`).

    Returns
    -------
    tf.Tensor float32 (S, S, 3) in [0, 255].
    """
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=8)
    x = tf.cast(image, tf.float32) / 255.0
    if config.flips:
        x = tf.image.stateless_random_flip_left_right(x, seeds[0])
        x = tf.image.stateless_random_flip_up_down(x, seeds[1])
    if config.rot90:
        k = tf.random.stateless_uniform((), seeds[2], minval=0, maxval=4, dtype=tf.int32)
        x = tf.image.rot90(x, k)
    if config.max_rotation > 0:
        lim = math.radians(config.max_rotation)
        angle = tf.random.stateless_uniform((), seeds[3], minval=-lim, maxval=lim)
        x = _rotate(x, angle, tf)
    if config.brightness > 0:
        x = tf.image.stateless_random_brightness(x, config.brightness, seeds[4])
    if config.contrast > 0:
        x = tf.image.stateless_random_contrast(x, 1.0 - config.contrast, 1.0 + config.contrast,
                                               seeds[5])
    if config.hue > 0:
        x = tf.image.stateless_random_hue(x, config.hue, seeds[6])
    if tuple(config.saturation) != (1.0, 1.0):
        x = tf.image.stateless_random_saturation(x, config.saturation[0],
                                                 config.saturation[1], seeds[7])
    if tuple(config.gamma) != (1.0, 1.0) or tuple(config.tint) != (1.0, 1.0):
        # extra keys folded in from the seed: the draws above stay what they were
        seed64 = tf.cast(seed, tf.int64)
        g = tf.random.stateless_uniform((), tf.random.experimental.stateless_fold_in(seed64, 8),
                                        minval=config.gamma[0], maxval=config.gamma[1])
        t = tf.random.stateless_uniform((3,), tf.random.experimental.stateless_fold_in(seed64, 9),
                                        minval=config.tint[0], maxval=config.tint[1])
        x = tf.pow(tf.clip_by_value(x, 0.0, 1.0), g) * t
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0
