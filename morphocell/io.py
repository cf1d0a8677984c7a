"""Reading and validating images, folders of class subfolders and manifests.

Every reader returns an ``HxWx3`` ``uint8`` RGB array or raises
:class:`~morphocell.errors.ImageReadError` naming the file and the reason.

Conversions (documented, deterministic):

* grey (``L``, ``1``) -> RGB by repeating the channel;
* palette (``P``) -> RGB through the palette (transparency composited on white);
* RGBA / LA -> RGB by compositing on a white background (slides are bright);
* CMYK (e.g. Adobe JPEG) -> RGB with Pillow's conversion;
* 16-bit (grey or RGB, PNG/TIFF) -> 8-bit by ``round(v / 257)``: a linear map of the full
  0..65535 range onto 0..255, no auto-contrast (so intensities stay comparable);
* 32-bit integer / float grey -> 8-bit by the same rule if all values fit 0..65535
  (floats in 0..1 are scaled by 255), otherwise the image is refused.
"""
from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import DataError, ImageReadError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "MIN_SIDE",
    "read_image",
    "validate_image",
    "load_folder",
    "load_manifest",
    "resolve_inputs",
    "iter_entries",
]

#: File name extensions treated as images when listing folders.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: Largest accepted image, in pixels (width * height), checked from the header before
#: decoding: protects against decompression bombs. 40 megapixels is far above a cell crop
#: or a smear field (640x480) yet far below what would exhaust memory.
MAX_PIXELS = 40_000_000
#: Smallest accepted side, in pixels: below this there is no cell to measure.
MIN_SIDE = 16


def _to_uint8_from_16(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _decode_16bit_cv2(data: bytes, path: str) -> np.ndarray:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None:
        raise ImageReadError("corrupt 16-bit image (could not be decoded)", path)
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            rgb = arr[..., 2::-1].astype(np.float64)
            alpha = arr[..., 3:4].astype(np.float64) / 65535.0
            arr = rgb * alpha + 65535.0 * (1.0 - alpha)
        else:
            arr = arr[..., 2::-1]
    out = _to_uint8_from_16(arr) if arr.dtype != np.uint8 else arr
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return np.ascontiguousarray(out)


def read_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as an ``HxWx3`` ``uint8`` RGB array.

    Parameters
    ----------
    path : str or PathLike
        JPEG, PNG, BMP or TIFF file.
    max_pixels : int
        Refuse images with more pixels than this (read from the header, before decoding).

    Raises
    ------
    ImageReadError
        If the file is missing, empty, not an image, truncated or corrupt, smaller than
        ``MIN_SIDE`` pixels on a side, or larger than ``max_pixels``.

    Examples
    --------
    >>> from morphocell.datasets import sample_paths
    >>> img = read_image(sample_paths()[0])
    >>> img.shape[2], img.dtype.name
    (3, 'uint8')
    """
    from PIL import Image, UnidentifiedImageError

    spath = os.fspath(path)
    p = Path(spath)
    if not p.exists():
        raise ImageReadError("file not found", spath)
    if p.is_dir():
        raise ImageReadError("is a directory, not an image file", spath)
    try:
        data = p.read_bytes()
    except PermissionError as exc:
        raise ImageReadError(f"permission denied ({exc.strerror})", spath) from None
    except OSError as exc:
        raise ImageReadError(f"could not be read ({exc.strerror or exc})", spath) from None
    if len(data) == 0:
        raise ImageReadError("empty file (0 bytes)", spath)

    import io as _io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: we check ourselves
        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            try:
                im = Image.open(_io.BytesIO(data))
            except UnidentifiedImageError:
                raise ImageReadError("not an image (format not recognised)", spath) from None
            except Exception as exc:  # noqa: BLE001 - Pillow raises many types on bad headers
                raise ImageReadError(f"corrupt image header ({exc})", spath) from None
            w, h = im.size
            if w * h > max_pixels:
                raise ImageReadError(
                    f"image too large: {w}x{h} = {w * h} pixels exceeds the limit of "
                    f"{max_pixels} (possible decompression bomb)", spath)
            if min(w, h) < MIN_SIDE:
                raise ImageReadError(
                    f"image too small: {w}x{h}, each side must be at least {MIN_SIDE} px", spath)
            raw16 = any(";16" in str(t[3]) for t in (im.tile or []) if len(t) > 3)
            try:
                im.load()
            except Exception as exc:  # noqa: BLE001 - truncated data surfaces as OSError & co
                raise ImageReadError(f"truncated or corrupt image data ({exc})", spath) from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit

    mode = im.mode
    if raw16 and mode in ("RGB", "RGBA"):
        return _decode_16bit_cv2(data, spath)
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.repeat(_to_uint8_from_16(np.asarray(im))[..., None], 3, axis=2)
    if mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageReadError("float image contains NaN or infinity", spath)
        if mode == "F" and a.min() >= 0 and a.max() <= 1.0:
            g = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
        elif a.min() >= 0 and a.max() <= 65535:
            g = _to_uint8_from_16(a)
        else:
            raise ImageReadError(f"unsupported value range {a.min()}..{a.max()} for mode {mode}",
                                 spath)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "P":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def validate_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Check an in-memory image and return it as a contiguous ``HxWx3`` ``uint8`` array.

    Accepts ``HxW`` grey and ``HxWx4`` RGBA (alpha dropped) ``uint8`` arrays, and float arrays in
    ``[0, 1]`` (scaled by 255). Raises :class:`ImageReadError` otherwise.
    """
    a = np.asarray(image)
    if a.dtype == bool or a.size == 0:
        raise ImageReadError(f"expected an RGB image array, got dtype {a.dtype} shape {a.shape}",
                             name)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ImageReadError(f"expected an HxWx3 array, got shape {a.shape}", name)
    a = a[..., :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise ImageReadError("image contains NaN or infinity", name)
            if a.min() < 0 or a.max() > 1:
                raise ImageReadError("float images must lie in [0, 1]", name)
            a = np.rint(a * 255.0).astype(np.uint8)
        elif np.issubdtype(a.dtype, np.integer):
            if a.min() < 0 or a.max() > 255:
                raise ImageReadError(f"integer image values must lie in 0..255 (dtype {a.dtype})",
                                     name)
            a = a.astype(np.uint8)
        else:
            raise ImageReadError(f"unsupported dtype {a.dtype}", name)
    if min(a.shape[:2]) < MIN_SIDE:
        raise ImageReadError(f"image too small: {a.shape[1]}x{a.shape[0]}, each side must be at "
                             f"least {MIN_SIDE} px", name)
    return np.ascontiguousarray(a)


def _is_image_file(p: Path) -> bool:
    return (not p.name.startswith(".")) and p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def load_folder(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """List a folder of class subfolders: ``root/<label>/<image>``.

    Returns ``(paths, labels)`` sorted by label then file name. Hidden files and folders
    (``.DS_Store``, ``.ipynb_checkpoints``) and non-image files are ignored.

    Raises
    ------
    DataError
        If ``root`` is not a folder, cannot be listed, or holds no class subfolder with images.
    """
    root_p = Path(root)
    if not root_p.is_dir():
        raise DataError("not a folder (expected a folder of class subfolders)", root_p)
    paths: list[str] = []
    labels: list[str] = []
    try:
        classes = sorted(d for d in root_p.iterdir() if d.is_dir() and not d.name.startswith("."))
    except PermissionError:
        raise DataError("permission denied while listing the folder", root_p) from None
    for d in classes:
        try:
            files = sorted(f for f in d.iterdir() if _is_image_file(f))
        except PermissionError:
            raise DataError("permission denied while listing the class folder", d) from None
        for f in files:
            paths.append(str(f))
            labels.append(d.name)
    if not paths:
        raise DataError("no class subfolder with images found", root_p)
    return paths, labels


def load_manifest(csv_path: str | os.PathLike) -> tuple[list[str], list[str] | None]:
    """Read a manifest CSV with a ``path`` column and an optional ``label`` column.

    Relative paths are taken relative to the CSV's folder. Paths are not checked here:
    missing files become failed rows later (a batch never dies on one bad image).
    Returns ``(paths, labels)``; ``labels`` is ``None`` when the CSV has no ``label`` column.
    """
    csv_p = Path(csv_path)
    if not csv_p.is_file():
        raise DataError("manifest not found", csv_p)
    base = csv_p.parent
    try:
        with open(csv_p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "path" not in fields:
                raise DataError(f"manifest needs a 'path' column (found: {fields})", csv_p)
            rows = list(reader)
    except UnicodeDecodeError:
        raise DataError("manifest is not a UTF-8 CSV file", csv_p) from None
    has_label = "label" in fields
    paths, labels = [], []
    for r in rows:
        r = {k.strip(): (v or "").strip() for k, v in r.items() if k is not None}
        if not r.get("path"):
            continue
        p = Path(r["path"])
        paths.append(str(p if p.is_absolute() else base / p))
        labels.append(r.get("label", ""))
    if not paths:
        raise DataError("manifest lists no images", csv_p)
    return paths, (labels if has_label else None)


def resolve_inputs(inputs: Sequence[str | os.PathLike] | str | os.PathLike
                   ) -> tuple[list[str], list[str] | None]:
    """Turn CLI-style inputs into ``(paths, labels)``.

    * one folder whose subfolders hold images -> :func:`load_folder` (labels = subfolder names);
    * one ``.csv`` file -> :func:`load_manifest`;
    * otherwise files and flat folders of images, labels ``None``.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [Path(i) for i in inputs]
    if len(inputs) == 1:
        only = inputs[0]
        if only.suffix.lower() == ".csv":
            return load_manifest(only)
        if only.is_dir():
            has_sub = any(d.is_dir() and not d.name.startswith(".") for d in only.iterdir())
            if has_sub:
                return load_folder(only)
    paths: list[str] = []
    for i in inputs:
        if i.is_dir():
            paths.extend(str(f) for f in sorted(i.iterdir()) if _is_image_file(f))
        else:
            paths.append(str(i))  # missing files are reported when read
    if not paths:
        raise DataError("no images found in " + ", ".join(map(str, inputs)))
    return paths, None


# --------------------------------------------------------------------------------------------
# Lazy listing
# --------------------------------------------------------------------------------------------

def _is_image_name(name: str) -> bool:
    return (not name.startswith(".")) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan_images(folder: str) -> Iterator[str]:
    """Image files of one folder, sorted by name (one directory's names held at a time)."""
    try:
        with os.scandir(folder) as it:
            names = sorted(e.name for e in it if _is_image_name(e.name) and e.is_file())
    except PermissionError:
        raise DataError("permission denied while listing the folder", folder) from None
    for n in names:
        yield os.path.join(folder, n)


def _has_subfolder(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return any(e.is_dir() and not e.name.startswith(".") for e in it)


def _iter_manifest(csv_path: Path) -> Iterator[tuple[str, str, str | None]]:
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "path" not in fields:
            raise DataError(f"manifest needs a 'path' column (found: {fields})", csv_path)
        has_label, has_id = "label" in fields, "id" in fields
        for r in reader:
            r = {k.strip(): (v or "").strip() for k, v in r.items() if k is not None}
            if not r.get("path"):
                continue
            p = r["path"]
            path = p if os.path.isabs(p) else os.path.join(base, p)
            path = str(Path(path))  # the same spelling as io.load_manifest
            key = (r.get("id") if has_id else "") or os.path.abspath(path)
            label = (r.get("label") or None) if has_label else None
            yield key, path, label


def iter_entries(inputs: Sequence[str | os.PathLike] | str | os.PathLike
                 ) -> Iterator[tuple[str, str, str | None]]:
    """List images lazily as ``(id, path, label)`` tuples, never holding the whole list.

    The same rules as :func:`morphocell.io.resolve_inputs` and the same paths in the same
    order (a test checks it):

    * one folder whose subfolders hold images -> ``root/<label>/<image>``, sorted by label then
      file name (one directory's names are held in memory at a time: for millions of files in
      one folder prefer a manifest);
    * one ``.csv`` file -> a manifest read row by row: a ``path`` column (relative paths are
      relative to the CSV's folder), optional ``label`` and ``id`` columns; ``id`` makes the
      row key, so one file listed several times with distinct ids gives distinct rows;
    * otherwise image files and flat folders of images, labels unknown.

    The row key ``id`` is the manifest's ``id`` when given, else the absolute path.

    Raises
    ------
    DataError
        If a manifest lacks a ``path`` column or is not UTF-8, a folder cannot be listed, or
        (when the generator is exhausted) nothing was listed.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    items = [Path(i) for i in inputs]
    if not items:
        raise DataError("no input given")
    n = 0
    try:
        if len(items) == 1 and items[0].suffix.lower() == ".csv":
            if not items[0].is_file():
                raise DataError("manifest not found", items[0])
            for e in _iter_manifest(items[0]):
                n += 1
                yield e
        elif len(items) == 1 and items[0].is_dir() and _has_subfolder(items[0]):
            root = items[0]
            with os.scandir(root) as it:
                classes = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
            for cls in classes:
                for p in _scan_images(str(root / cls)):
                    n += 1
                    yield os.path.abspath(p), p, cls
        else:
            for i in items:
                if i.is_dir():
                    for p in _scan_images(str(i)):
                        n += 1
                        yield os.path.abspath(p), p, None
                else:
                    n += 1  # a missing file becomes a failed row, as in extract_batch
                    yield os.path.abspath(str(i)), str(i), None
    except UnicodeDecodeError:
        raise DataError("manifest is not a UTF-8 CSV file", items[0]) from None
    if n == 0:
        raise DataError("no images found in " + ", ".join(map(str, items)))



def iter_chunks(items: Iterable, size: int):
    """Yield lists of at most ``size`` consecutive items."""
    chunk = []
    for it in items:
        chunk.append(it)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
