"""The one lister of image inputs: files, flat folders, class subfolders and manifests."""
from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .read import _PNG_MAGIC, IMAGE_EXTENSIONS

# --------------------------------------------------------------------------------------------
# Listing: the one lister of folders, class folders and manifests
# --------------------------------------------------------------------------------------------

#: Ways to read one folder given as input (``layout=``):
#: ``"auto"``: images only -> unlabelled; subfolders only -> one class per subfolder; both ->
#: :class:`DataError` naming one loose image and one subfolder (the caller must choose);
#: ``"flat"``: the images directly inside, subfolders ignored (counted in the report);
#: ``"classes"``: one class per subfolder, loose images ignored (counted in the report).
LAYOUTS = ("auto", "flat", "classes")

#: File name endings of what ``morphocell segment`` writes next to its inputs' names
#: (``<name>_mask.png``, ``<name>_overlay.png``), also the segwbc expert masks
#: (``NNN_mask.png``): masks and overlays, never cells. The lister skips them.
DERIVED_SUFFIXES = ("_mask.png", "_overlay.png")
#: PNG text chunk (keyword, value) that marks a file as written by morphocell (masks,
#: overlays): see :func:`derived_pnginfo`. The lister skips marked PNGs whatever their name.
DERIVED_MARKER = ("Software", "morphocell")


@dataclass
class ListingReport:
    """What a listing left out or found odd, filled as :func:`iter_entries` runs.

    Attributes
    ----------
    skipped : list of str
        Masks and overlays (files written by morphocell, expert ``*_mask.png``) not listed.
    ignored : list of str
        Loose images under ``layout="classes"``, subfolders under ``layout="flat"``, and
        folders inside class folders (not read: a class is one level deep).
    empty_classes : list of str
        Class folders that hold no image (an error when labels are required).
    labelled : bool
        Whether some input carries labels (a class folder, a manifest with ``label``).
    layouts : list of str
        The reading chosen for each input: ``"flat"``, ``"classes"``, ``"manifest"``,
        ``"file"``.
    """

    skipped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    labelled: bool = False
    layouts: list[str] = field(default_factory=list)


@dataclass
class Listing:
    """A complete listing (:func:`list_entries`): ``ids``, ``paths``, ``labels`` (``None``
    when no input carries labels; ``""`` for an unlabelled row among labelled ones) and the
    :class:`ListingReport` of what was left out."""

    ids: list[str]
    paths: list[str]
    labels: list[str] | None
    report: ListingReport


def derived_pnginfo():
    """A :class:`PIL.PngImagePlugin.PngInfo` carrying :data:`DERIVED_MARKER`; pass it as
    ``pnginfo=`` when saving a mask or overlay so that no lister reads it back as a cell."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(*DERIVED_MARKER)
    return info


def _has_marker(path: str, limit: int = 1 << 16) -> bool:
    """Whether the PNG at ``path`` holds the :data:`DERIVED_MARKER` text chunk before its
    image data (where Pillow writes text chunks); reads at most ``limit`` bytes."""
    want = DERIVED_MARKER[0].encode("latin-1") + b"\0" + DERIVED_MARKER[1].encode("latin-1")
    try:  # non-blocking: a FIFO named .png must not stall the listing
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        head = os.read(fd, limit)
    except OSError:
        return False
    finally:
        os.close(fd)
    if not head.startswith(_PNG_MAGIC):
        return False
    pos = len(_PNG_MAGIC)
    while pos + 8 <= len(head):
        n = int.from_bytes(head[pos:pos + 4], "big")
        kind = head[pos + 4:pos + 8]
        if kind in (b"IDAT", b"IEND"):
            return False
        if kind == b"tEXt" and head[pos + 8:pos + 8 + n] == want:
            return True
        pos += 12 + n
    return False


def is_derived(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a mask or overlay rather than a cell image: its name ends with one
    of :data:`DERIVED_SUFFIXES`, or it is a PNG marked with :data:`DERIVED_MARKER`."""
    s = os.fspath(path)
    low = s.lower()
    if low.endswith(DERIVED_SUFFIXES):
        return True
    return low.endswith(".png") and _has_marker(s)


def _is_image_name(name: str) -> bool:
    return (not name.startswith(".")) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _scan(folder: str) -> tuple[list[str], list[str]]:
    """``(image names, subfolder names)`` of one folder, each sorted; hidden names left out.

    An image name is any non-folder entry with an image extension, including a broken symbolic
    link or a FIFO: those are listed and become failed rows when read, never dropped here."""
    files, dirs = [], []
    try:
        with os.scandir(folder) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    dirs.append(e.name)
                elif _is_image_name(e.name):
                    files.append(e.name)
    except PermissionError:
        raise DataError("permission denied while listing the folder", folder) from None
    except NotADirectoryError:
        raise DataError("not a folder", folder) from None
    return sorted(files), sorted(dirs)


def _unescape(value: str) -> str:
    """Undo :func:`morphocell._utils.csv_safe`: a ``'`` that morphocell put before a value a
    spreadsheet would run as a formula (``'=x.jpg`` -> ``=x.jpg``)."""
    from .._utils import FORMULA_PREFIXES

    if value.startswith("'") and value[1:].startswith(FORMULA_PREFIXES):
        return value[1:]
    return value


def _iter_manifest(csv_path: Path, report: ListingReport, labelled: bool = False
                   ) -> Iterator[tuple[str, str, str | None]]:
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if "path" not in fields:
            raise DataError(f"manifest needs a 'path' column (found: {fields})", csv_path)
        has_label, has_id = "label" in fields, "id" in fields
        if labelled and not has_label:
            raise DataError(f"manifest needs a 'label' column to train (found: {fields})",
                            csv_path)
        report.labelled = report.labelled or has_label
        for r in reader:
            r = {k.strip(): _unescape((v or "").strip()) for k, v in r.items() if k is not None}
            if not r.get("path"):
                continue
            p = r["path"]
            path = str(Path(p if os.path.isabs(p) else os.path.join(base, p)))
            key = (r.get("id") if has_id else "") or os.path.abspath(path)
            label = (r.get("label") or None) if has_label else None
            yield key, path, label


def _folder_layout(folder: str, files: list[str], dirs: list[str], layout: str,
                   skip_derived: bool) -> str:
    if layout != "auto":
        return layout
    if not dirs:
        return "flat"
    loose = next((n for n in files
                  if not (skip_derived and is_derived(os.path.join(folder, n)))), None)
    if loose is None:
        return "classes"
    more_f = f" and {len(files) - 1} more" if len(files) > 1 else ""
    more_d = f" and {len(dirs) - 1} more" if len(dirs) > 1 else ""
    raise DataError(
        f"holds both images ({loose}{more_f}) and subfolders ({dirs[0]}/{more_d}); say which "
        "reading you want: layout='flat' (the images directly inside; subfolders ignored) or "
        "layout='classes' (one class per subfolder; loose images ignored) "
        "(command line: --layout flat|classes)", folder)


def iter_entries(inputs: Sequence[str | os.PathLike] | str | os.PathLike, *,
                 layout: str = "auto", labelled: bool = False, skip_derived: bool = True,
                 report: ListingReport | None = None
                 ) -> Iterator[tuple[str, str, str | None]]:
    """List images lazily as ``(id, path, label)`` tuples, never holding the whole list.

    Each input is read as follows:

    * a ``.csv`` file -> a manifest read row by row: a ``path`` column (relative paths are
      relative to the CSV's folder), optional ``label`` and ``id`` columns; ``id`` makes the
      row key, so one file listed several times with distinct ids gives distinct rows;
    * a folder -> by ``layout`` (:data:`LAYOUTS`): with ``"auto"``, a folder of images is
      unlabelled, a folder of subfolders is ``root/<label>/<image>`` (sorted by label then
      file name), and a folder holding both is a :class:`DataError` naming one image and one
      subfolder; ``"flat"`` / ``"classes"`` choose;
    * anything else -> one image path (a missing image file becomes a failed row when read;
      a missing path without an image extension, e.g. a mistyped folder, is a
      :class:`DataError`).

    Masks and overlays (:func:`is_derived`: ``*_mask.png``, ``*_overlay.png``, PNGs marked by
    morphocell) are skipped and recorded in ``report.skipped`` unless ``skip_derived=False``.
    A broken symbolic link or other non-regular file with an image name is listed (it becomes
    a failed row when read). One directory's names are held in memory at a time: for
    millions of files in one folder prefer a manifest. The row key ``id`` is the manifest's
    ``id`` when given, else the absolute path.

    Parameters
    ----------
    inputs : path or sequence of paths
    layout : {"auto", "flat", "classes"}
    labelled : bool
        Require a label for every row (training): an input without labels, an empty class
        folder or a manifest row with an empty label is a :class:`DataError`.
    skip_derived : bool
        Skip masks and overlays (default).
    report : ListingReport, optional
        Filled with what was skipped, ignored or empty while the generator runs.

    Raises
    ------
    DataError
        A manifest without a ``path`` column or not UTF-8, a folder that cannot be listed or
        mixes images and subfolders under ``layout="auto"``, missing labels when
        ``labelled``, or (when the generator is exhausted) nothing listed.
    """
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r} (one of {', '.join(LAYOUTS)})")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    yield from _entries([Path(i) for i in inputs], layout, labelled, skip_derived,
                        ListingReport() if report is None else report, False)


def _entries(items: list[Path], layout: str, labelled: bool, skip_derived: bool,
             rep: ListingReport, force_manifest: bool) -> Iterator[tuple[str, str, str | None]]:
    if not items:
        raise DataError("no input given")
    n = 0

    def keep(path: str) -> bool:
        if skip_derived and is_derived(path):
            rep.skipped.append(path)
            return False
        return True

    for item in items:
        if force_manifest or (item.suffix.lower() == ".csv" and not item.is_dir()):
            if not item.is_file():
                raise DataError("manifest not found", item)
            rep.layouts.append("manifest")
            try:
                for line, (key, path, label) in enumerate(_iter_manifest(item, rep, labelled),
                                                             start=2):
                    if labelled and not label:
                        raise DataError(f"row {line} has no label ({path}); every row needs "
                                        "a 'label' to train", item)
                    if keep(path):
                        n += 1
                        yield key, path, label
            except UnicodeDecodeError:
                raise DataError("manifest is not a UTF-8 CSV file", item) from None
            continue
        if not item.is_dir():
            if not _is_image_name(item.name) and not os.path.lexists(item):
                raise DataError("no such folder or file", item)  # a mistyped folder name
            if labelled:
                raise DataError("no labels: give a folder of class subfolders or a manifest "
                                "CSV with 'path' and 'label' columns", item)
            rep.layouts.append("file")
            if keep(str(item)):
                n += 1
                yield os.path.abspath(str(item)), str(item), None
            continue
        folder = str(item)
        files, dirs = _scan(folder)
        how = _folder_layout(folder, files, dirs, layout, skip_derived)
        rep.layouts.append(how)
        if how == "flat":
            if labelled:
                raise DataError("no labels: the folder holds images, not class subfolders "
                                "(give a folder of class subfolders or a manifest CSV with "
                                "'path' and 'label' columns)", item)
            rep.ignored.extend(os.path.join(folder, d) for d in dirs)
            for name in files:
                p = os.path.join(folder, name)
                if keep(p):
                    n += 1
                    yield os.path.abspath(p), p, None
            continue
        rep.labelled = True
        rep.ignored.extend(os.path.join(folder, f) for f in files
                           if not (skip_derived and is_derived(os.path.join(folder, f))))
        for cls in dirs:
            sub = os.path.join(folder, cls)
            names, nested = _scan(sub)
            rep.ignored.extend(os.path.join(sub, d) for d in nested)
            k = 0
            for name in names:
                p = os.path.join(sub, name)
                if keep(p):
                    k += 1
                    n += 1
                    yield os.path.abspath(p), p, cls
            if k == 0:
                rep.empty_classes.append(sub)
                if labelled:
                    raise DataError(f"class folder {cls!r} holds no image: remove it or add "
                                    "its images (a model cannot learn a class without "
                                    "examples)", sub)
    if n == 0:
        extra = (f" ({len(rep.skipped)} masks/overlays written by morphocell skipped)"
                 if rep.skipped else "")
        raise DataError("no images found in " + ", ".join(map(str, items)) + extra)


def list_entries(inputs: Sequence[str | os.PathLike] | str | os.PathLike, *,
                 layout: str = "auto", labelled: bool = False,
                 skip_derived: bool = True) -> Listing:
    """:func:`iter_entries` collected into a :class:`Listing` (ids, paths, labels, report)."""
    rep = ListingReport()
    ids, paths, labs = [], [], []
    for key, path, label in iter_entries(inputs, layout=layout, labelled=labelled,
                                         skip_derived=skip_derived, report=rep):
        ids.append(key)
        paths.append(path)
        labs.append(label or "")
    return Listing(ids, paths, labs if rep.labelled else None, rep)


def resolve_inputs(inputs: Sequence[str | os.PathLike] | str | os.PathLike, *,
                   layout: str = "auto", labelled: bool = False
                   ) -> tuple[list[str], list[str] | None]:
    """Turn CLI-style inputs into ``(paths, labels)`` (see :func:`iter_entries` for the rules;
    :func:`list_entries` also returns what was skipped)."""
    lst = list_entries(inputs, layout=layout, labelled=labelled)
    return lst.paths, lst.labels


def load_folder(root: str | os.PathLike) -> tuple[list[str], list[str]]:
    """List a folder of class subfolders: ``root/<label>/<image>``.

    Returns ``(paths, labels)`` sorted by label then file name. Hidden files and folders
    (``.DS_Store``, ``.ipynb_checkpoints``), non-image files and masks/overlays are ignored.

    Raises
    ------
    DataError
        If ``root`` is not a folder, cannot be listed, holds no class subfolder with images,
        or a class subfolder holds no image.
    """
    root_p = Path(root)
    if not root_p.is_dir():
        raise DataError("not a folder (expected a folder of class subfolders)", root_p)
    if not _scan(str(root_p))[1]:
        raise DataError("no class subfolder with images found", root_p)
    lst = list_entries(root_p, layout="classes", labelled=True)
    return lst.paths, lst.labels  # type: ignore[return-value]


def load_manifest(csv_path: str | os.PathLike) -> tuple[list[str], list[str] | None]:
    """Read a manifest CSV with a ``path`` column and an optional ``label`` column.

    Relative paths are taken relative to the CSV's folder; a ``'`` that morphocell's CSV
    writers put before a value starting with ``=``, ``+``, ``-``, ``@``, tab or CR (so that a
    spreadsheet shows it as text) is removed. Paths are not checked here:
    missing files become failed rows later (a batch never dies on one bad image).
    Returns ``(paths, labels)``; ``labels`` is ``None`` when the CSV has no ``label`` column.
    """
    csv_p = Path(csv_path)
    if not csv_p.is_file():
        raise DataError("manifest not found", csv_p)
    rep = ListingReport()
    paths, labels = [], []
    try:
        for _, path, label in _entries([csv_p], "auto", False, True, rep, True):
            paths.append(path)
            labels.append(label or "")
    except DataError as exc:
        if exc.reason.startswith("no images found"):
            raise DataError("manifest lists no images", csv_p) from None
        raise
    return paths, (labels if rep.labelled else None)


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
