"""Stain augmentation of training images: the one definition of its ranges.

Stain augmentation (domain randomisation) draws, per training image, another lab's stain and
optics: a hue rotation, a saturation factor, a gamma, a per-channel gain (illumination tint),
a Gaussian blur and a rescaling. A classifier trained on one lab then sees a spread of stains
and optics. The ranges live in :class:`StainAugmentConfig`; :func:`stain_augment` applies
them to an image in NumPy / OpenCV (the copies of the hand-crafted models,
:func:`write_stain_copies`), and :class:`morphocell.deep.augment.AugmentConfig.stain` takes
the colour part of the same ranges for the CNN's on-the-fly augmentation
(``CNNEmbedder(augment="stain")``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import MorphocellError
from ._common import _check_image


@dataclass(frozen=True)
class StainAugmentConfig:
    """Ranges of the stain augmentation (each drawn uniformly per image).

    Attributes
    ----------
    hue : float
        Rotation of the HSV hue, as a fraction of the colour wheel, drawn in ``[-hue, hue]``.
    saturation : (float, float)
        Factor range on the HSV saturation.
    tint : (float, float)
        Per-channel gain range (illumination colour, e.g. a yellowish lamp), one draw per
        channel.
    gamma : (float, float)
        Exponent range on intensities in 0..1.
    blur : (float, float)
        Gaussian sigma range in px (0: none).
    scale : (float, float)
        Resize factor range.
    """

    hue: float = 0.08
    saturation: tuple[float, float] = (0.6, 1.4)
    tint: tuple[float, float] = (0.85, 1.15)
    gamma: tuple[float, float] = (0.7, 1.4)
    blur: tuple[float, float] = (0.0, 2.0)
    scale: tuple[float, float] = (0.5, 1.2)

    def colour_only(self) -> StainAugmentConfig:
        """The same colour ranges without blur and rescaling (``blur=(0, 0)``,
        ``scale=(1, 1)``): what an augmentation that works at a fixed input size uses."""
        return replace(self, blur=(0.0, 0.0), scale=(1.0, 1.0))


#: The stain augmentation ranges used by default everywhere (copies and the CNN).
STAIN_AUGMENT = StainAugmentConfig()


def stain_augment(image: np.ndarray, rng: np.random.Generator,
                  config: StainAugmentConfig = STAIN_AUGMENT) -> tuple[np.ndarray, dict]:
    """One random stain / optics / scale variant of a training image.

    Order: rescale (area interpolation when shrinking, bicubic when enlarging), Gaussian blur,
    hue rotation and saturation factor in HSV (OpenCV float HSV, hue in degrees), gamma, then
    per-channel gain, clipped.

    Parameters
    ----------
    image : uint8 array (H, W, 3)
    rng : numpy.random.Generator
        The source of every draw: the same state gives the same image.
    config : StainAugmentConfig
        The ranges (default :data:`STAIN_AUGMENT`).

    Returns
    -------
    (uint8 image, dict of the drawn parameters)
    """
    import cv2

    img = _check_image(image)
    c = config
    p = {"scale": float(rng.uniform(*c.scale)), "blur": float(rng.uniform(*c.blur)),
         "hue": float(rng.uniform(-c.hue, c.hue)),
         "saturation": float(rng.uniform(*c.saturation)),
         "gamma": float(rng.uniform(*c.gamma)),
         "tint": rng.uniform(*c.tint, size=3).round(4).tolist()}
    h, w = img.shape[:2]
    out = img
    if abs(p["scale"] - 1.0) > 1e-3:
        size = (max(8, round(w * p["scale"])), max(8, round(h * p["scale"])))
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA if p["scale"] < 1
                         else cv2.INTER_CUBIC)
    f = out.astype(np.float32) / 255.0
    if p["blur"] > 0.05:
        f = cv2.GaussianBlur(f, (0, 0), p["blur"])
    hsv = cv2.cvtColor(f, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * p["hue"], 360.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * p["saturation"], 0.0, 1.0)
    f = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    f = np.power(np.clip(f, 0.0, 1.0), p["gamma"]) * np.asarray(p["tint"], np.float32)
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8), p


def write_stain_copies(paths: Sequence[str | os.PathLike], folder: str | os.PathLike,
                       seed: int = 0, config: StainAugmentConfig = STAIN_AUGMENT,
                       n_threads: int | None = None, verbose: int = 0) -> list[str | None]:
    """One :func:`stain_augment` copy of each image file, written as JPEG (quality 95).

    The copy of an image depends only on its content, ``seed`` and ``config``: it is drawn
    with ``numpy.random.default_rng([seed, <64 bits of the image's SHA-256>])`` and stored as
    ``folder/<image sha256 prefix>-<settings hash>.jpg``; a file already there is reused, so
    a rerun (e.g. a second ``morphocell train`` with the same images) writes nothing and its
    features come from the feature cache. Files are written atomically.

    Returns the copy's path per input, ``None`` where the image could not be read.
    """
    import hashlib
    import json
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import asdict
    from pathlib import Path

    import cv2

    from .._utils import atomic_path, file_sha256, progress
    from ..io import read_image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(json.dumps({"seed": int(seed), "config": asdict(config),
                                     "format": 1}, sort_keys=True).encode()).hexdigest()[:10]

    def one(path) -> str | None:
        try:
            digest = file_sha256(path)
        except OSError:
            return None
        dst = folder / f"{digest[:24]}-{tag}.jpg"
        if dst.is_file():
            return str(dst)
        try:
            img = read_image(path)
        except MorphocellError:
            return None
        rng = np.random.default_rng([int(seed), int(digest[:16], 16)])
        out, _ = stain_augment(img, rng, config)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 RGB image
            return None
        with atomic_path(dst) as tmp:
            Path(tmp).write_bytes(buf.tobytes())
        return str(dst)

    paths = [os.fspath(p) for p in paths]
    n_threads = n_threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return list(progress(pool.map(one, paths), total=len(paths), desc="stain copies",
                             verbose=verbose))
