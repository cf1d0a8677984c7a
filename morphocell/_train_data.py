"""Listing labelled training data: a folder of class subfolders, a manifest with labels, and
several labs (a folder of lab folders, or a manifest's ``domain`` column). Re-exported by
:mod:`morphocell.train`."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .errors import DataError
from .report import plural

#: The manifest column that names each row's lab (:func:`load_labs`).
DOMAIN_COLUMN = "domain"


def load_labelled(data: str | os.PathLike, *, layout: str = "auto", strict: bool = True,
                  report=None) -> tuple[list[str], list[str]]:
    """``(paths, labels)`` of a folder of class subfolders or a manifest CSV with labels.

    Parameters
    ----------
    data : folder of class subfolders, or manifest CSV with ``path`` and ``label`` columns
    layout : {"auto", "flat", "classes"}
        How a folder is read (:func:`morphocell.io.iter_entries`).
    strict : bool
        Training: a class folder without images is a :class:`DataError` naming it (a model
        cannot learn a class without examples). Otherwise it is recorded in ``report``.
    report : :class:`morphocell.io.ListingReport`, optional
        Filled with what the listing skipped or ignored (masks and overlays, ...).

    Raises
    ------
    DataError
        No labels, an empty label, an empty class folder (``strict``), or nothing listed.
    """
    from .io import ListingReport, iter_entries

    rep = ListingReport() if report is None else report
    rows = list(iter_entries([data], layout=layout, labelled=strict, report=rep))
    paths = [p for _, p, _ in rows]
    labels = [lab or "" for _, _, lab in rows] if rep.labelled else None
    if labels is None:
        raise DataError("no labels: give a folder of class subfolders or a manifest CSV with "
                        "'path' and 'label' columns", data)
    missing = [p for p, lab in zip(paths, labels, strict=True) if not lab]
    if missing:
        raise DataError(f"{plural(len(missing), 'manifest row')} with an empty label "
                        f"(first: {missing[0]})", data)
    return paths, labels


def load_labs(data: str | os.PathLike, *, by_lab: bool = False, layout: str = "auto",
              report=None) -> tuple[list[str], list[str], list[str] | None]:
    """``(paths, labels, domains)`` of labelled data, with the lab of every image when the
    data say it (``domains`` is ``None`` otherwise).

    * a manifest CSV with a ``domain`` column (:data:`DOMAIN_COLUMN`): the lab of each row
      (every row needs one); without the column, ``domains`` is ``None`` (an error when
      ``by_lab``);
    * ``by_lab``: ``data`` is a folder of lab folders, each holding class subfolders
      (``data/<lab>/<class>/<image>``); the lab is the folder's name;
    * otherwise a folder of class subfolders: one lab, ``domains`` is ``None``.

    ``layout`` applies to each class-subfolder folder (:func:`load_labelled`).

    Raises
    ------
    DataError
        What :func:`load_labelled` refuses; a row without a domain; ``by_lab`` with a
        manifest without a ``domain`` column, a folder without lab folders, or images
        directly in ``data`` (beside the lab folders).
    """
    from .io import ListingReport
    from .io.listing import _is_image_name

    rep = ListingReport() if report is None else report
    p = Path(data)
    if p.suffix.lower() == ".csv" and not p.is_dir():
        paths, labels = load_labelled(p, layout=layout, report=rep)
        domains = manifest_domains(p, paths)
        if domains is None and by_lab:
            raise DataError(f"by lab: the manifest needs a '{DOMAIN_COLUMN}' column naming the "
                            "lab of every row", p)
        return paths, labels, domains
    if not by_lab:
        paths, labels = load_labelled(p, layout=layout, report=rep)
        return paths, labels, None
    if not p.is_dir():
        raise DataError("not a folder (by lab: a folder of lab folders, each holding class "
                        "subfolders, or a manifest CSV with a 'domain' column)", p)
    entries = sorted(os.scandir(p), key=lambda e: e.name)
    labs = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if e.is_file() and _is_image_name(e.name)]
    if loose:
        raise DataError(f"holds images ({loose[0]}{' ...' if len(loose) > 1 else ''}) beside "
                        "the lab folders: by lab, every image goes in <lab>/<class>/", p)
    if not labs:
        raise DataError("no lab folder found (by lab: <folder>/<lab>/<class>/<image>)", p)
    paths, labels, domains = [], [], []
    for lab in labs:
        lp, ll = load_labelled(p / lab, layout=layout, report=rep)
        paths += lp
        labels += ll
        domains += [lab] * len(lp)
    return paths, labels, domains


def manifest_domains(csv_path: str | os.PathLike, paths: list[str]) -> list[str] | None:
    """The ``domain`` value of each listed row of a manifest (``paths``: what
    :func:`load_labelled` listed from it, in order; rows it skipped, such as masks, are
    passed over). ``None`` when the manifest has no ``domain`` column.

    Raises
    ------
    DataError
        A listed row with an empty domain.
    """
    from .io.listing import _unescape

    csv_path = Path(csv_path)
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        if DOMAIN_COLUMN not in fields:
            return None
        rows = []
        for line, r in enumerate(reader, start=2):
            r = {k.strip(): _unescape((v or "").strip()) for k, v in r.items() if k is not None}
            if not r.get("path"):
                continue
            q = r["path"]
            rows.append((line, str(Path(q if os.path.isabs(q) else os.path.join(base, q))),
                         r.get(DOMAIN_COLUMN, "")))
    out, k = [], 0
    for path in paths:
        while k < len(rows) and rows[k][1] != path:
            k += 1
        if k == len(rows):  # cannot happen for paths listed from this manifest
            raise DataError(f"{path} is not a row of the manifest", csv_path)
        line, _, dom = rows[k]
        if not dom:
            raise DataError(f"row {line} has no {DOMAIN_COLUMN} ({path}); with a "
                            f"'{DOMAIN_COLUMN}' column every row names its lab", csv_path)
        out.append(dom)
        k += 1
    return out
