"""The image files of the review page: thumbnail, full-size copy, outline overlays, features.

Every file is named by the cell's row number (``thumbs/000012.jpg``), never by its source
file name, so no name from the predictions table reaches the file system or a URL.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: features shown in the detail panel: (registry name, label, unit shown or ``None`` for the
#: registry's unit). Granularity is a percentage of the region's dark signal (registry).
DETAIL_FEATURES: tuple[tuple[str, str, str | None], ...] = (
    ("Nucleus_Shape_Area", "Nucleus area", None),
    ("Cell_Shape_Area", "Cell area", None),
    ("Nucleus_Shape_NucleusToCellRatio", "N/C ratio (nucleus / cell area)", None),
    ("Nucleus_Shape_LobeCount", "Nuclear lobes", None),
    ("Nucleus_Shape_Circularity", "Nucleus circularity", None),
    ("Cytoplasm_Texture_Granularity_Gray_2", "Cytoplasm granularity (radius 2)", "%"),
)
#: feature families needed by :data:`DETAIL_FEATURES`
DETAIL_FAMILIES = ("shape", "texture")

#: side of the square the thumbnails fit in, in pixels
THUMB_SIZE = 96
#: outline colours (RGBA): nucleus cyan, cytoplasm yellow — both far from the stain's purples
NUCLEUS_RGBA = (0, 229, 255, 255)
CYTOPLASM_RGBA = (255, 212, 0, 255)
#: extensions a browser shows as they are (the full-size image is then a byte copy)
_BROWSER_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}

_UNIT_TEXT = {"px2": "px²", "px": "px", "px-1": "px⁻¹", "rad": "rad", "1": "", "OD": "OD",
              "intensity": ""}


def feature_columns() -> list[dict]:
    """The detail panel's features with their label, unit and one-line meaning (registry)."""
    from ..features import registry

    out = []
    for name, label, unit in DETAIL_FEATURES:
        spec = registry.describe(name)
        out.append({"name": name, "label": label,
                    "unit": unit if unit is not None else _UNIT_TEXT.get(spec.unit, spec.unit),
                    "description": spec.description})
    return out


@dataclass
class CellFiles:
    """What was written for one cell."""

    missing: bool = False          # the image file does not exist
    unreadable: str = ""           # why the image could not be read ("" when it could)
    full_ext: str = ""             # extension of full/<id>.<ext> ("" when none written)
    outlines: bool = False         # outlines/<id>_n.png and _c.png written
    features: list = field(default_factory=list)  # values of DETAIL_FEATURES (None: NaN)


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (or on the image border)."""
    m = np.asarray(mask, dtype=bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    inner[0, :] = inner[-1, :] = False
    inner[:, 0] = inner[:, -1] = False
    return m & ~inner


def _write_outline(mask: np.ndarray, rgba, path: Path) -> None:
    from PIL import Image

    b = _boundary(mask)
    out = np.zeros(b.shape + (4,), dtype=np.uint8)
    out[b] = rgba
    Image.fromarray(out, "RGBA").save(path, format="PNG", compress_level=6)


def _thumbnail(img: np.ndarray, path: Path, size: int) -> None:
    from PIL import Image

    im = Image.fromarray(img)
    im.thumbnail((size, size), Image.Resampling.BILINEAR)  # antialiased; 2.5x faster than Lanczos
    im.save(path, format="JPEG", quality=85)


def write_cell_files(cell_id: str, src: Path, out_dir: Path, *, masks: bool = True,
                     features: bool = True, method: str = "otsu",
                     thumb_size: int = THUMB_SIZE) -> CellFiles:
    """Write ``thumbs/<id>.jpg``, ``full/<id>.<ext>`` and (``masks``) the two outline PNGs of
    one image; compute the detail features (``features``, needs ``masks``)."""
    from ..errors import MorphocellError
    from ..io import read_image

    res = CellFiles(features=[None] * len(DETAIL_FEATURES))
    if not src.is_file():
        res.missing = True
        return res
    try:
        img = read_image(src)
    except MorphocellError as exc:
        res.unreadable = exc.reason
        return res
    _thumbnail(img, out_dir / "thumbs" / f"{cell_id}.jpg", thumb_size)
    ext = _BROWSER_EXT.get(src.suffix.lower())
    if ext is not None:
        shutil.copyfile(src, out_dir / "full" / f"{cell_id}.{ext}")
    else:  # BMP / TIFF / 16-bit: the decoded 8-bit RGB image the model saw
        from PIL import Image

        ext = "png"
        Image.fromarray(img).save(out_dir / "full" / f"{cell_id}.png", format="PNG")
    res.full_ext = ext
    if not masks:
        return res
    from ..segmentation import segment

    try:
        cm = segment(img, method=method)
    except MorphocellError as exc:
        res.unreadable = f"segmentation failed: {exc.reason}"
        return res
    if not cm.found:
        return res
    _write_outline(cm.nucleus, NUCLEUS_RGBA, out_dir / "outlines" / f"{cell_id}_n.png")
    _write_outline(cm.cytoplasm, CYTOPLASM_RGBA, out_dir / "outlines" / f"{cell_id}_c.png")
    res.outlines = True
    if features:
        from ..features.extractor import extract_features

        f = extract_features(img, cm, families=DETAIL_FAMILIES)
        vals = []
        for name, _, _ in DETAIL_FEATURES:
            v = f.get(name, math.nan)
            vals.append(None if v is None or not math.isfinite(v) else float(v))
        res.features = vals
    return res


def write_cell_chunk(items, out_dir: str, masks: bool, features: bool, method: str,
                     thumb_size: int) -> list[tuple[int, CellFiles]]:
    """:func:`write_cell_files` of ``items`` (``(row, cell id, source path)``) in one batch
    task (a worker of :mod:`morphocell.batch.engine`); ``(row, CellFiles)`` pairs."""
    out = Path(out_dir)
    return [(row, write_cell_files(cid, Path(src), out, masks=masks, features=features,
                                   method=method, thumb_size=thumb_size))
            for row, cid, src in items]

