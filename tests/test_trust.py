"""Trust: nothing read silently wrong (issue "no silently dropped cells ...").

Every bad input is made inside the test: folders mixing images and subfolders, masks written
by ``segment``, segwbc expert masks, broken links, empty class folders, FIFOs, ``/dev/zero``,
multi-GB sparse files, tampered model headers with recomputed checksums, a header ZIP bomb and
file names that a spreadsheet would run as formulas.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from morphocell import DataError, ImageReadError, ModelFileError
from morphocell._utils import file_sha256, write_csv
from morphocell.io import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    ListingReport,
    derived_pnginfo,
    is_derived,
    iter_entries,
    list_entries,
    load_folder,
    load_manifest,
    read_image,
    resolve_inputs,
)

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _copy_cells(pbc_small, folder: Path, n: int, by_class: bool = False) -> list[Path]:
    """Copy ``n`` real PBC images into ``folder`` (into ``folder/<class>`` if ``by_class``)."""
    out = []
    for src, lab in pbc_small[:n]:
        d = folder / lab if by_class else folder
        d.mkdir(parents=True, exist_ok=True)
        dst = d / Path(src).name
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def _names(paths) -> list[str]:
    return sorted(os.path.basename(p) for p in paths)


def _run_with_timeout(fn, seconds: float):
    """``fn()`` in a thread; fails the test (instead of hanging it) after ``seconds``."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t0 = time.perf_counter()
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (it would hang)"
    return box, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
# 1. the lister: no cell silently dropped, no mask read as a cell
# ---------------------------------------------------------------------------------------------

def test_folder_of_images_and_subfolder_needs_a_layout(pbc_small, tmp_path):
    """`segment cells --out cells/masks` then listing `cells`: an error naming both, unless
    the caller says which reading it wants."""
    from morphocell.segmentation import save_masks, segment

    cells = tmp_path / "cells"
    imgs = _copy_cells(pbc_small, cells, 6)
    for p in imgs:  # what `morphocell segment cells --out cells/masks` writes
        img = read_image(p)
        save_masks(img, segment(img), cells / "masks", p.stem)
    assert len(list((cells / "masks").iterdir())) == 12
    with pytest.raises(DataError) as e:
        resolve_inputs(cells)
    msg = str(e.value)
    assert str(cells) in msg and imgs[0].name in msg and "masks/" in msg
    assert "layout" in msg and "flat" in msg and "classes" in msg

    flat = list_entries(cells, layout="flat")
    assert _names(flat.paths) == _names(imgs) and flat.labels is None
    assert flat.report.ignored == [str(cells / "masks")]
    # read as classes, the only "class" holds masks and overlays only: nothing is a cell
    with pytest.raises(DataError, match="no images found.*12 masks/overlays"):
        list_entries(cells, layout="classes")
    rep = ListingReport()
    with pytest.raises(DataError):
        list(iter_entries(cells, layout="classes", report=rep))
    assert len(rep.skipped) == 12 and rep.empty_classes == [str(cells / "masks")]
    assert sorted(rep.ignored) == sorted(map(str, imgs))
    with pytest.raises(DataError, match="unknown layout"):
        resolve_inputs(cells, layout="tree")


def test_masks_and_overlays_are_never_listed_as_cells(pbc_small, tmp_path):
    """The masks folder given directly, or a folder where outputs sit next to the inputs:
    only the cells are listed; the skipped files are counted."""
    from morphocell.segmentation import save_masks, segment

    out = tmp_path / "out"
    imgs = _copy_cells(pbc_small, out, 5)
    for p in imgs:
        img = read_image(p)
        save_masks(img, segment(img), out, p.stem)
    lst = list_entries(out)
    assert _names(lst.paths) == _names(imgs)
    assert len(lst.report.skipped) == 10
    assert all(p.endswith(("_mask.png", "_overlay.png")) for p in lst.report.skipped)
    # given one by one (a shell glob) they are skipped too
    lst = list_entries(sorted(map(str, out.iterdir())))
    assert _names(lst.paths) == _names(imgs) and len(lst.report.skipped) == 10
    # skip_derived=False lists everything (a user who really wants masks measured)
    assert len(list_entries(out, skip_derived=False).paths) == 15


def test_marked_png_is_skipped_whatever_its_name(pbc_small, tmp_path):
    """A PNG carrying morphocell's Software text chunk is derived even when renamed."""
    img = read_image(pbc_small[0][0])
    marked, plain = tmp_path / "cell_017.png", tmp_path / "cell_018.png"
    Image.fromarray(img).save(marked, pnginfo=derived_pnginfo())
    Image.fromarray(img).save(plain)
    assert is_derived(marked) and not is_derived(plain)
    lst = list_entries(tmp_path)
    assert lst.paths == [str(plain)] and lst.report.skipped == [str(marked)]
    # the marker does not stop the file from being read when asked for explicitly
    np.testing.assert_array_equal(read_image(marked), img)


def test_segwbc_folder_lists_images_not_expert_masks(data_dir, tmp_path):
    src = data_dir / "segwbc" / "dataset2"
    images = sorted(src.glob("*_image.png"))[:4]
    for p in images:
        shutil.copyfile(p, tmp_path / p.name)
        m = p.with_name(p.name.replace("_image", "_mask"))
        shutil.copyfile(m, tmp_path / m.name)
    lst = list_entries(tmp_path)
    assert _names(lst.paths) == [p.name for p in images]
    assert len(lst.report.skipped) == 4


def test_broken_symlink_in_a_folder_is_a_failed_row(pbc_small, tmp_path):
    imgs = _copy_cells(pbc_small, tmp_path, 2)
    link = tmp_path / "moved.jpg"
    link.symlink_to(tmp_path / "elsewhere" / "gone.jpg")
    paths, _ = resolve_inputs(tmp_path)
    assert str(link) in paths and len(paths) == 3
    with pytest.raises(ImageReadError, match="broken symbolic link") as e:
        read_image(link)
    assert str(link) in str(e.value) and "gone.jpg" in str(e.value)
    assert read_image(imgs[0]).shape == (256, 256, 3)


def test_empty_class_folder(pbc_small, tmp_path):
    """Training: an empty class folder is an error naming it. Prediction: reported."""
    root = tmp_path / "data"
    _copy_cells(pbc_small, root, 9, by_class=True)  # 3 classes x 3 images
    (root / "monocyte").mkdir()
    (root / "monocyte" / "notes.txt").write_text("to do")
    with pytest.raises(DataError, match="monocyte.*holds no image") as e:
        load_folder(root)
    assert str(root / "monocyte") in str(e.value)
    with pytest.raises(DataError, match="holds no image"):
        resolve_inputs(root, labelled=True)
    (root / "monocyte" / "later").mkdir()  # nested folders are not read, but reported
    lst = list_entries(root)
    assert len(lst.paths) == 9 and lst.report.empty_classes == [str(root / "monocyte")]
    assert lst.report.ignored == [str(root / "monocyte" / "later")]
    assert sorted(set(lst.labels)) == sorted({lab for _, lab in pbc_small[:9]})


def test_labels_required_for_training(pbc_small, tmp_path):
    _copy_cells(pbc_small, tmp_path / "flat", 2)
    with pytest.raises(DataError, match="no labels"):
        resolve_inputs(tmp_path / "flat", labelled=True)
    m = tmp_path / "m.csv"
    m.write_text(f"path,label\n{pbc_small[0][0]},basophil\n{pbc_small[1][0]},\n")
    with pytest.raises(DataError, match="row 3 has no label"):
        resolve_inputs(m, labelled=True)
    m.write_text(f"path\n{pbc_small[0][0]}\n")
    with pytest.raises(DataError, match="'label' column"):
        resolve_inputs(m, labelled=True)


def test_mistyped_folder_is_a_user_error(pbc_small, tmp_path):
    """A missing folder is an error naming it; a missing image file in a list of files is a
    failed row later (the other files are read)."""
    _copy_cells(pbc_small, tmp_path / "cells", 2)
    with pytest.raises(DataError, match="no such folder or file") as e:
        resolve_inputs(tmp_path / "cels")
    assert str(tmp_path / "cels") in str(e.value)
    good = str(tmp_path / "cells" / os.path.basename(pbc_small[0][0]))
    paths, _ = resolve_inputs([good, str(tmp_path / "gone.jpg")])
    assert paths == [good, str(tmp_path / "gone.jpg")]


def test_one_lister_for_every_reading(pbc_small, tmp_path):
    """resolve_inputs, load_folder, load_manifest and iter_entries agree (one implementation)."""
    root = tmp_path / "data"
    _copy_cells(pbc_small, root, 12, by_class=True)
    paths, labels = load_folder(root)
    assert resolve_inputs(root) == (paths, labels)
    assert [(p, lab) for _, p, lab in iter_entries(root)] == list(zip(paths, labels))
    m = tmp_path / "m.csv"
    pd.DataFrame({"path": [os.path.relpath(p, tmp_path) for p in paths],
                  "label": labels}).to_csv(m, index=False)
    assert load_manifest(m) == resolve_inputs(m) == (paths, labels)


# ---------------------------------------------------------------------------------------------
# 3. reading before checking
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cell.jpg", "cell.png"])
def test_fifo_is_refused_without_blocking(tmp_path, pbc_small, name):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    box, _ = _run_with_timeout(lambda: read_image(fifo), 10)
    assert isinstance(box.get("error"), ImageReadError)
    assert "FIFO" in str(box["error"]) and str(fifo) in str(box["error"])
    box, _ = _run_with_timeout(lambda: file_sha256(fifo), 10)
    assert isinstance(box.get("error"), OSError)
    # listed from a folder (never dropped, the listing does not block on it), refused when read
    shutil.copyfile(pbc_small[0][0], tmp_path / "good.jpg")
    box, _ = _run_with_timeout(lambda: resolve_inputs(tmp_path), 10)
    assert sorted(box["value"][0]) == sorted([str(fifo), str(tmp_path / "good.jpg")])


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_in_a_manifest_is_a_failed_row(tmp_path, pbc_small):
    m = tmp_path / "m.csv"
    m.write_text(f"path\n{pbc_small[0][0]}\n/dev/zero\n")
    paths, _ = load_manifest(m)
    assert paths[1] == "/dev/zero"
    tracemalloc.start()
    try:
        box, took = _run_with_timeout(lambda: read_image("/dev/zero"), 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(box.get("error"), ImageReadError)
    assert "character device" in str(box["error"])
    assert took < 1.0 and peak < 10 << 20
    with pytest.raises(OSError, match="not a regular file"):
        file_sha256("/dev/zero")
    from morphocell.batch.cache import image_sha256

    assert image_sha256("/dev/zero") is None
    assert read_image(paths[0]).shape == (256, 256, 3)  # the good row still reads


@pytest.mark.parametrize("head", [b"", b"\xff\xd8\xff\xe0"])
def test_sparse_multi_gb_file_rejected_from_its_first_bytes(tmp_path, head):
    """3 GB named .jpg: refused in well under a second without reading it (zeros: not an
    image; a JPEG signature: larger than any accepted image)."""
    p = tmp_path / "huge.jpg"
    with open(p, "wb") as fh:
        fh.write(head)
        fh.truncate(3 << 30)
    assert p.stat().st_size == 3 << 30 and p.stat().st_blocks * 512 < 1 << 20
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(ImageReadError) as e:
            read_image(p)
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert took < 0.5 and peak < 10 << 20, (took, peak)
    assert ("too large" if head else "not an image") in str(e.value)
    t0 = time.perf_counter()
    with pytest.raises(OSError, match="larger than"):
        file_sha256(p, max_bytes=MAX_FILE_BYTES)
    assert time.perf_counter() - t0 < 0.5


def test_file_size_cap_and_signature(tmp_path, pbc_small):
    """A real image read with a lower byte cap is refused before reading; a GIF (a real image
    but not a supported format) is refused from its signature."""
    src = Path(pbc_small[0][0])
    with pytest.raises(ImageReadError, match="file too large"):
        read_image(src, max_bytes=src.stat().st_size - 1)
    assert read_image(src, max_bytes=src.stat().st_size).shape == (256, 256, 3)
    gif = tmp_path / "cell.jpg"
    Image.open(src).save(gif, format="GIF")
    with pytest.raises(ImageReadError, match="not JPEG, PNG, BMP or TIFF"):
        read_image(gif)


def test_byte_cap_admits_every_encoding_within_the_pixel_cap(tmp_path, pbc_small):
    """The largest encoding read (uncompressed 16-bit RGBA TIFF, 8 bytes a pixel) of an image
    at the pixel limit is within the byte limit: shown at a small limit with the same rule."""
    import cv2

    assert MAX_FILE_BYTES == 8 * MAX_PIXELS + (1 << 20)
    rgb = read_image(pbc_small[0][0])
    h, w = rgb.shape[:2]
    a16 = np.dstack([rgb[..., ::-1].astype(np.uint16) * 257, np.full((h, w), 65535, np.uint16)])
    p = tmp_path / "rgba16.tif"
    assert cv2.imwrite(str(p), a16, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    assert 8 * h * w < p.stat().st_size < 8 * h * w + (1 << 20)
    out = read_image(p, max_pixels=h * w, max_bytes=8 * h * w + (1 << 20))
    np.testing.assert_array_equal(out, rgb)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(p, max_pixels=h * w - 1)


def test_directory_and_hash_guards(tmp_path, pbc_small):
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)
    with pytest.raises(OSError):
        file_sha256(tmp_path)
    src = pbc_small[0][0]
    assert file_sha256(src) == hashlib.sha256(Path(src).read_bytes()).hexdigest()
    with pytest.raises(OSError, match="larger than"):
        file_sha256(src, max_bytes=100)


# ---------------------------------------------------------------------------------------------
# 6. CSV formula injection
# ---------------------------------------------------------------------------------------------

def test_formula_like_file_name_is_text_in_csv(pbc_small, tmp_path):
    name = "=SUM(1+1)*cmd|calc!A0.jpg"
    p = tmp_path / name
    shutil.copyfile(pbc_small[0][0], p)
    df = pd.DataFrame({"path": [str(p), "-3", "@x", "\tt", "plain"],
                       "predicted": ["+lymphocyte", "monocyte", "", "a", "b"],
                       "p_monocyte": [-0.25, 0.5, 1.0, 0.0, 0.75],
                       "n": [-1, 2, 3, 4, 5]})
    out = tmp_path / "pred.csv"
    write_csv(df, out, float_format="%.6f")
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert raw.loc[0, "path"] == str(p)  # an absolute path starts with "/": unchanged
    # a relative path (as in a manifest written next to the images) starts with "="
    rel = pd.DataFrame({"path": [name], "label": ["=HYPERLINK(\"x\")"], "score": [-1.5]})
    write_csv(rel, tmp_path / "m.csv")
    text = (tmp_path / "m.csv").read_text().splitlines()
    assert text[1].startswith("'=SUM(1+1)") and ",-1.5" in text[1]
    assert not any(cell.startswith(("=", "+", "@")) for line in text[1:]
                   for cell in line.split(","))
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(raw["path"][1:4]) == ["'-3", "'@x", "'\tt"]
    assert raw.loc[0, "predicted"] == "'+lymphocyte"
    assert list(raw["p_monocyte"]) == ["-0.250000", "0.500000", "1.000000", "0.000000",
                                      "0.750000"]
    assert list(raw["n"]) == ["-1", "2", "3", "4", "5"]  # numbers stay numbers
    # read back as a manifest, the quote is removed: the file is found and read
    paths, labels = load_manifest(tmp_path / "m.csv")
    assert paths == [str(p)] and labels == ["=HYPERLINK(\"x\")"]
    assert read_image(paths[0]).shape == (256, 256, 3)


def test_write_csv_index_and_column_names(tmp_path):
    cm = pd.DataFrame([[1, 0], [0, 2]], index=["=a", "b"], columns=["=a", "b"])
    write_csv(cm, tmp_path / "cm.csv", index=True)
    lines = (tmp_path / "cm.csv").read_text().splitlines()
    assert lines[0] == ",'=a,b" and lines[1] == "'=a,1,0"


# ---------------------------------------------------------------------------------------------
# 2. model files: the header is bound to the payload
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(pbc_small, tmp_path_factory):
    """A real model (features -> stack) on 24 PBC images, with a review threshold and an
    out-of-distribution reference as ``morphocell train`` writes them."""
    from sklearn.pipeline import Pipeline

    from morphocell import FeatureExtractor, StackedCellClassifier
    from morphocell.ensembles import BaseLearner
    from morphocell.model_io import SavedModel, save_model
    from morphocell.novelty import fit_novelty_reference

    paths = [p for p, _ in pbc_small]
    y = [lab for _, lab in pbc_small]
    fe = FeatureExtractor(families=("shape", "color")).fit()
    X = fe.transform(paths)
    clf = StackedCellClassifier(
        estimators=[("rf", BaseLearner("rf", params={"n_estimators": 10})),
                    ("xgb", BaseLearner("xgb", params={"n_estimators": 10, "max_depth": 2}))],
        cv=2, random_state=0).fit(X, y)
    pipe = Pipeline([("features", fe), ("clf", clf)])
    meta = {"domain_reference": fit_novelty_reference(X, y),
            "review": {"threshold": 0.6, "target_accuracy": 0.99, "n": 24,
                       "review_fraction": 0.5, "accepted_accuracy": 1.0}}
    assert meta["domain_reference"] is not None
    f = tmp_path_factory.mktemp("model") / "m.mcm"
    save_model(SavedModel(pipe, list(clf.classes_), list(X.columns), None, meta), f)
    return f, paths


def _tamper(src: Path, out: Path, edit=None, *, payload=None, compression=zipfile.ZIP_STORED):
    """Copy a model file with ``edit(header)`` applied and every checksum recomputed (what
    anyone who read the docs can do)."""
    with zipfile.ZipFile(src) as z:
        h = json.loads(z.read("header.json"))
        p = z.read("model.skops") if payload is None else payload
    if edit is not None:
        edit(h)
    h["payload_sha256"] = hashlib.sha256(p).hexdigest()
    hb = json.dumps(h).encode()
    with zipfile.ZipFile(out, "w", compression=compression) as z:
        z.writestr("header.json", hb)
        z.writestr("model.skops", p)
        z.writestr("checksum.sha256", hashlib.sha256(hb + p).hexdigest())
    return out


def _set(path: str, value):
    def edit(h):
        node = h
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value(node[keys[-1]]) if callable(value) else value
    return edit


TAMPERED = [
    ("relabelled classes", _set("classes", lambda c: c[1:] + c[:1]), "not the model's classes"),
    ("fewer classes", _set("classes", lambda c: c[:-1]), "not the model's classes"),
    ("a class twice", _set("classes", lambda c: [c[0]] * len(c)), "not the model's classes"),
    ("feature names", _set("feature_names", lambda f: f[:-1]), "feature names"),
    ("atypical nonexistent", _set("atypical_classes", ["nonexistent"]),
     "atypical classes \\['nonexistent'\\]"),
    ("review threshold -0.1", _set("metadata.review.threshold", -0.1), "review threshold"),
    ("review threshold 1.5", _set("metadata.review.threshold", 1.5), "review threshold"),
    ("review threshold text", _set("metadata.review.threshold", "high"), "review threshold"),
    ("reference feature", _set("metadata.domain_reference.features",
                               lambda f: f[:-1] + ["Cell_Shape_Nonsense"]), "reference"),
    ("reference shape", _set("metadata.domain_reference.median", lambda m: m[:-1]),
     "reference.*shape"),
    ("reference scale", _set("metadata.domain_reference.scale",
                             lambda s: [[0.0] * len(r) for r in s]), "reference"),
    ("reference class", _set("metadata.domain_reference.classes",
                             lambda c: c[:-1] + ["martian"]), "reference"),
    ("reference threshold", _set("metadata.domain_reference.threshold", "inf"), "reference"),
    ("version banana", _set("morphocell_version", "banana"), "unparsable morphocell version"),
    ("classes not names", _set("classes", [1, 2]), "not a list of names"),
]


@pytest.mark.parametrize("case,edit,match", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_tampered_header_with_recomputed_checksum_is_refused(model_file, tmp_path, case, edit,
                                                             match):
    from morphocell.model_io import load_model

    f, _ = model_file
    bad = _tamper(f, tmp_path / "bad.mcm", edit)
    with pytest.raises(ModelFileError, match=match) as e:
        load_model(bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(bad))


def test_untampered_model_and_format_1_load(model_file, tmp_path):
    from morphocell.model_io import FORMAT_VERSION, load_model, read_header

    f, paths = model_file
    assert read_header(f)["format_version"] == FORMAT_VERSION == 2
    m = load_model(f)
    proba = m.predict_proba(paths[:4])
    # the same file as format 1 (morphocell 0.1) loads through the compatibility table
    old = _tamper(f, tmp_path / "v1.mcm", _set("format_version", 1))
    np.testing.assert_array_equal(load_model(old).predict_proba(paths[:4]), proba)
    # a re-zipped (deflated) file is fine: the ratio of a real payload is small
    z = _tamper(f, tmp_path / "deflated.mcm", compression=zipfile.ZIP_DEFLATED)
    assert load_model(z).classes == m.classes


def test_format_1_payload_with_renamed_module_loads(model_file, tmp_path, monkeypatch):
    """Old payloads name classes by their old module (morphocell.deep.fusion); the table maps
    them to the current ones. Shown on a real payload whose stacking class is given an old
    module name."""
    import io as _io

    import morphocell.model_io as mio

    f, paths = model_file
    with zipfile.ZipFile(f) as z:
        payload = z.read("model.skops")
    src = zipfile.ZipFile(_io.BytesIO(payload))
    schema = src.read("schema.json").decode()
    old_name = "morphocell.ensembles.oldstack"
    assert '"morphocell.ensembles.stacking"' in schema
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for i in src.infolist():
            data = src.read(i.filename)
            if i.filename == "schema.json":
                data = schema.replace('"morphocell.ensembles.stacking"',
                                      f'"{old_name}"').encode()
            dst.writestr(i.filename, data)
    old = _tamper(f, tmp_path / "old.mcm", _set("format_version", 1), payload=buf.getvalue())
    with pytest.raises(ModelFileError, match="untrusted types"):
        mio.load_model(old)  # not in the table: refused, nothing built
    monkeypatch.setitem(mio.RENAMED_TYPES, f"{old_name}.StackedCellClassifier",
                        "morphocell.ensembles.stacking.StackedCellClassifier")
    monkeypatch.setitem(mio.RENAMED_TYPES, f"{old_name}.BaseLearner",
                        "morphocell.ensembles.stacking.BaseLearner")
    m = mio.load_model(old)
    np.testing.assert_array_equal(m.predict_proba(paths[:3]),
                                  mio.load_model(f).predict_proba(paths[:3]))
    # a current-format file is never rewritten: the old name stays refused
    cur = _tamper(f, tmp_path / "cur.mcm", payload=buf.getvalue())
    with pytest.raises(ModelFileError, match="untrusted types"):
        mio.load_model(cur)


def test_header_zip_bomb_is_refused_before_inflating(model_file, tmp_path):
    """A header that inflates to 1 GiB from about 1 MB: refused from its declared size,
    quickly and without the memory."""
    from morphocell.model_io import MAX_HEADER_BYTES, load_model, read_header

    f, _ = model_file
    with zipfile.ZipFile(f) as z:
        p = z.read("model.skops")
    bomb = tmp_path / "bomb.mcm"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("header.json", "w", force_zip64=True) as fh:
            block = b" " * (1 << 20)
            for _ in range(1024):
                fh.write(block)
        z.writestr("model.skops", p)
        z.writestr("checksum.sha256", "0" * 64)
    assert bomb.stat().st_size < 16 << 20
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        for fn in (load_model, read_header):
            with pytest.raises(ModelFileError, match="implausibly large"):
                fn(bomb)
        took = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert took < 1.0 and peak < MAX_HEADER_BYTES * 40, (took, peak)


def test_lying_member_size_is_refused(model_file, tmp_path):
    """A header whose declared size is small but whose data inflates more is not read past
    the declared size (zipfile stops there) and then fails its checksum or parse."""
    from morphocell.model_io import load_model

    f, _ = model_file
    good = _tamper(f, tmp_path / "g.mcm", compression=zipfile.ZIP_DEFLATED)
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("header.json")  # the first member: first central directory entry
        cd = z.start_dir
    # shrink the declared (inflated) size in the central directory only
    import struct

    assert data[cd:cd + 4] == b"PK\x01\x02"
    assert struct.unpack_from("<I", data, cd + 24)[0] == info.file_size
    struct.pack_into("<I", data, cd + 24, 10)
    bad = tmp_path / "lying.mcm"
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError):
        load_model(bad)


def test_model_file_special_files(tmp_path):
    from morphocell.model_io import load_model

    fifo = tmp_path / "m.mcm"
    os.mkfifo(fifo)
    box, _ = _run_with_timeout(lambda: load_model(fifo), 10)
    assert isinstance(box.get("error"), ModelFileError) and "regular file" in str(box["error"])
    if os.path.exists("/dev/zero"):
        with pytest.raises(ModelFileError, match="regular file"):
            load_model("/dev/zero")


def test_default_model_name(model_file, tmp_path, monkeypatch):
    import morphocell.model_io as mio

    monkeypatch.setattr(mio, "_MODELS_DIR", tmp_path / "models")
    with pytest.raises(ModelFileError, match="the default model is not installed"):
        mio.load_model("default")
    with pytest.raises(ModelFileError, match="the default model is not installed"):
        mio.read_header("default")
    (tmp_path / "models").mkdir()
    f, _ = model_file
    shutil.copyfile(f, tmp_path / "models" / "default.mcm")
    assert mio.resolve_model("default") == tmp_path / "models" / "default.mcm"
    assert mio.load_model("default").classes == mio.load_model(f).classes
    # any other name is a path; ./default is the file of that name
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelFileError, match="model file not found"):
        mio.load_model("./default")


def test_packaged_default_model_location():
    """The name resolves inside the installed package (pyproject ships models/*.mcm)."""
    import morphocell.model_io as mio

    assert mio._MODELS_DIR == Path(mio.__file__).resolve().parent / "models"
    text = (Path(mio.__file__).resolve().parents[1] / "pyproject.toml")
    if text.is_file():
        assert "models/*.mcm" in text.read_text()
