"""The review page's files on real predictions (the browser tests are in test_review_browser.py).

Predictions come from ``morphocell train`` on the bundled sample and ``morphocell predict`` on
the sample and on 200 real cells (160 PBC test images, 40 segwbc dataset1 images).
"""
from __future__ import annotations

import csv
import glob
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, pbc_subset
from PIL import Image

from morphocell.cli import main
from morphocell.errors import DataError
from morphocell.review import (
    CSP,
    DETAIL_FEATURES,
    read_predictions,
    wilson_interval,
    write_review_page,
)

#: a file name that would run script if a page put it into HTML unescaped
HOSTILE = "x\"><img src=q onerror=\"document.title='pwned'\">.png"


def _write_manifest(path: Path, paths) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path"])
        w.writerows([p] for p in paths)
    return path


def review_predictions(tmp_path_factory) -> dict:
    """Real predictions, made once per test session (both review test modules use them).

    Returns paths: ``model``, ``sample_csv`` (the 80 bundled images), ``cells_csv`` (160 PBC
    test images, 40 segwbc images and a copy of a PBC image under :data:`HOSTILE`), ``hostile``
    (that copy), ``dir`` (the folder holding them).
    """
    root = tmp_path_factory.getbasetemp() / "review_predictions"
    done = root / "done.json"
    if done.is_file():
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    from morphocell.datasets import sample_folder

    model = root / "sample.mcm"
    cache = root / "cache"
    assert main(["train", str(sample_folder()), "--out", str(model), "--cv", "3",
                 "--domain-copies", "0", "--cache-dir", str(cache), "-q"]) == 0
    sample_csv = root / "sample_predictions.csv"
    assert main(["predict", str(model), str(sample_folder()), "--out", str(sample_csv),
                 "--cache-dir", str(cache), "-q"]) == 0
    hostile_dir = root / "odd names"
    hostile_dir.mkdir()
    hostile = hostile_dir / HOSTILE
    Image.open(pbc_subset(1, "test", offset=40)[0][0]).save(hostile, format="PNG")
    cells = [p for p, _ in pbc_subset(20, "test")]
    cells += sorted(glob.glob(str(DATA / "segwbc" / "dataset1" / "*_image.png")))[:40]
    cells.append(str(hostile))
    man = _write_manifest(root / "cells.csv", cells)
    cells_csv = root / "cell_predictions.csv"
    assert main(["predict", str(model), str(man), "--out", str(cells_csv),
                 "--cache-dir", str(cache), "-q"]) == 0
    out = {"model": model, "sample_csv": sample_csv, "cells_csv": cells_csv,
           "hostile": hostile, "dir": root}
    done.write_text(json.dumps({k: str(v) for k, v in out.items()}))
    return out


@pytest.fixture(scope="module")
def preds(data_dir, tmp_path_factory):
    return review_predictions(tmp_path_factory)


def _data(out: Path) -> dict:
    text = (out / "data.js").read_text(encoding="ascii")  # the data file is pure ASCII
    prefix = "window.MORPHOCELL_REVIEW = "
    assert text.startswith(prefix) and text.rstrip().endswith(";")
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


# -- the Wilson interval --------------------------------------------------------------------
def _score_bound(k: int, n: int, z: float, upper: bool) -> float:
    """The Wilson bound by its definition: the p whose score statistic equals z (bisection)."""
    phat = k / n

    def stat(p):
        return (phat - p) / math.sqrt(p * (1 - p) / n)
    lo, hi = (phat, 1.0 - 1e-15) if upper else (1e-15, phat)
    if (upper and k == n) or (not upper and k == 0):
        return 1.0 if upper else 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        s = stat(mid)
        if upper:
            lo, hi = (mid, hi) if s > -z else (lo, mid)
        else:
            lo, hi = (lo, mid) if s < z else (mid, hi)
    return (lo + hi) / 2


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 100), (17, 200), (49, 200), (200, 200),
                                 (3, 7)])
def test_wilson_interval_is_the_score_interval(k, n):
    from morphocell.review._data import Z95

    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(_score_bound(k, n, Z95, False), abs=1e-9)
    assert hi == pytest.approx(_score_bound(k, n, Z95, True), abs=1e-9)
    assert lo <= k / n <= hi
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# -- the files ------------------------------------------------------------------------------
def test_page_files_on_real_predictions(preds, tmp_path):
    from morphocell.features.extractor import extract_features
    from morphocell.io import read_image
    from morphocell.segmentation import segment

    out = tmp_path / "page"
    res = write_review_page(preds["cells_csv"], out)
    df = pd.read_csv(preds["cells_csv"], dtype=str, keep_default_na=False)
    assert res.index == out / "index.html" and res.n_cells == len(df) == 201
    assert res.missing == [] and res.unreadable == []
    assert res.counts == {c: int((df["predicted"] == c).sum()) for c in res.counts}
    html = res.index.read_text()
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in html
    # nothing from elsewhere: every src / href of the page and its style is a local file
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert sorted(refs) == ["data.js", "review.css", "review.js"]
    for name in ("review.js", "review.css", "data.js"):
        text = (out / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.IGNORECASE), name
        assert "@import" not in text and "url(http" not in text
    data = _data(out)
    assert [c["p"] for c in data["cells"]] == df["path"].tolist()
    classes = data["classes"]
    assert classes == [c[2:] for c in df.columns if c.startswith("p_") and c != "p_atypical"]
    for c, (_, row) in zip(data["cells"], df.iterrows(), strict=True):
        assert classes[c["c"]] == row["predicted"]
        assert c["r"] == (row["needs_review"] == "True")
        assert c["u"] == (row["unlike_training"] == "True")
        assert np.allclose(c["q"], [float(row[f"p_{k}"]) for k in classes], atol=1e-4)
        thumb = Image.open(out / "thumbs" / f"{c['i']}.jpg")
        assert max(thumb.size) == 96
        full = out / "full" / f"{c['i']}.{c['x']}"
        assert full.read_bytes() == Path(row["path"]).read_bytes()  # the original, untouched
    # one cell in detail: its outlines are the boundaries of segment()'s masks, and its
    # measurements are extract_features' values
    k = 5
    cell = data["cells"][k]
    img = read_image(df["path"][k])
    masks = segment(img)
    for suffix, mask in (("n", masks.nucleus), ("c", masks.cytoplasm)):
        alpha = np.asarray(Image.open(out / "outlines" / f"{cell['i']}_{suffix}.png"))[..., 3] > 0
        assert alpha.shape == mask.shape
        assert alpha.any() and not (alpha & ~mask).any()  # drawn on the mask only ...
        from scipy.ndimage import binary_erosion
        assert (alpha == (mask & ~binary_erosion(mask, border_value=0))).all()  # ... its edge
    feats = extract_features(img, masks)
    names = [f["name"] for f in data["features"]]
    assert names == [n for n, _, _ in DETAIL_FEATURES]
    assert cell["v"] == pytest.approx([round(feats[n], 4) for n in names], abs=1e-3)
    units = {f["name"]: f["unit"] for f in data["features"]}
    assert units["Nucleus_Shape_Area"] == "px²" and units["Nucleus_Shape_LobeCount"] == ""


@pytest.mark.slow
def test_worker_processes_write_the_same_page(preds, tmp_path):
    a = write_review_page(preds["sample_csv"], tmp_path / "serial", chunk_size=16)
    b = write_review_page(preds["sample_csv"], tmp_path / "two", n_jobs=2, chunk_size=16)
    da, db = _data(tmp_path / "serial"), _data(tmp_path / "two")
    assert da["cells"] == db["cells"] and a.counts == b.counts
    for sub in ("thumbs", "full", "outlines"):
        names = sorted(p.name for p in (tmp_path / "serial" / sub).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "two" / sub).iterdir())
        assert all((tmp_path / "serial" / sub / n).read_bytes()
                   == (tmp_path / "two" / sub / n).read_bytes() for n in names)


def test_hostile_names_never_reach_html_or_file_names(preds, tmp_path):
    hostile_csv = tmp_path / 'p"><b id=bad>.csv'
    shutil.copyfile(preds["cells_csv"], hostile_csv)
    res = write_review_page(hostile_csv, tmp_path / "page")
    html = res.index.read_text()
    assert "<b id=bad>" not in html and "&lt;b id=bad&gt;" in html
    raw = (tmp_path / "page" / "data.js").read_text()
    assert "<" not in raw and ">" not in raw  # HTML-significant characters are \u escapes
    data = _data(tmp_path / "page")
    assert data["cells"][-1]["p"] == str(preds["hostile"])
    written = [p.name for p in (tmp_path / "page").rglob("*")]
    assert all(re.fullmatch(r"[0-9]+(_[nc])?\.(jpg|png)|[a-z]+(\.(js|css|html))?", n)
               for n in written), written


def test_missing_images_get_placeholders(preds, tmp_path, capsys):
    src = [p for p, _ in pbc_subset(2, "test", offset=60)][:2]
    copies = []
    for k, p in enumerate(src):
        q = tmp_path / f"cell{k}.jpg"
        shutil.copyfile(p, q)
        copies.append(q)
    man = _write_manifest(tmp_path / "m.csv", [str(c) for c in copies])
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(preds["model"]), str(man), "--out", str(pred), "-q"]) == 0
    copies[1].unlink()  # reviewed after an image was moved away
    res = write_review_page(pred, tmp_path / "page")
    assert res.missing == [str(copies[1])]
    data = _data(tmp_path / "page")
    assert [c["m"] for c in data["cells"]] == [0, 1]
    assert data["cells"][1]["x"] == "" and data["cells"][1]["c"] >= 0  # still counted
    assert not (tmp_path / "page" / "thumbs" / f"{data['cells'][1]['i']}.jpg").exists()
    capsys.readouterr()
    code = main(["review", str(pred), "--out", str(tmp_path / "page2"), "-q"])
    err = capsys.readouterr().err
    assert code == 3 and (tmp_path / "page2" / "index.html").is_file()
    assert str(copies[1]) in err and "no longer exists" in err


def repeated_images_predictions(model: Path, folder: Path) -> Path:
    """Predictions of 4 rows, 2 images: A, B, A again (same path), B copied under another name."""
    a, b = (p for p, _ in pbc_subset(1, "test", offset=70)[:2])
    copy_b = folder / "copy_of_b.jpg"
    shutil.copyfile(b, copy_b)
    man = _write_manifest(folder / "rep.csv", [a, b, a, str(copy_b)])
    pred = folder / "rep_pred.csv"
    assert main(["predict", str(model), str(man), "--out", str(pred), "-q"]) == 0
    return pred


def test_repeated_images_are_one_cell(preds, tmp_path):
    pred = repeated_images_predictions(preds["model"], tmp_path)
    res = write_review_page(pred, tmp_path / "page")
    expected = json.loads((tmp_path / "rep_pred_differential.json").read_text())["counts"]
    assert res.counts == expected and sum(res.counts.values()) == 2  # as predict counts
    assert res.n_cells == 4 and res.n_repeats == 2 and res.n_classified == 2
    data = _data(tmp_path / "page")
    assert [c.get("d") for c in data["cells"]] == [None, None, 0, 1]
    assert [c["i"] for c in data["cells"]] == ["000000", "000001", "000000", "000001"]
    assert len(list((tmp_path / "page" / "thumbs").iterdir())) == 2


def test_bad_predictions_files_exit_2_with_one_line(preds, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    header_only = tmp_path / "header.csv"
    header_only.write_text("path,predicted,p_a,p_b\n")
    no_proba = tmp_path / "noproba.csv"
    no_proba.write_text("path,label\n/a.jpg,neutrophil\n")
    cases = {tmp_path / "absent.csv": "not found", empty: "empty",
             header_only: "lists no images", no_proba: "no class probability columns"}
    for path, words in cases.items():
        with pytest.raises(DataError, match=words):
            read_predictions(path)
        capsys.readouterr()
        assert main(["review", str(path), "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and words in err[0], err
    assert not (tmp_path / "never" / "index.html").exists()


def test_rewriting_a_page_leaves_no_stale_images(preds, tmp_path):
    out = tmp_path / "page"
    write_review_page(preds["cells_csv"], out, masks=False)
    assert len(list((out / "thumbs").iterdir())) == 201
    write_review_page(preds["sample_csv"], out, masks=False)
    assert len(list((out / "thumbs").iterdir())) == 80
    assert not any((out / "outlines").iterdir())
    data = _data(out)
    assert data["features"] == [] and all(c["o"] == 0 for c in data["cells"])


def test_relative_paths_and_sidecar(preds, tmp_path, monkeypatch):
    """predict writes paths as given (relative to where it ran); review finds them from the
    working folder, from ``base_dir`` or from the CSV's folder, and takes the atypical
    classes from the sidecar ``<stem>_differential.json``."""
    df = pd.read_csv(preds["sample_csv"], dtype=str, keep_default_na=False)
    folder = tmp_path / "run"
    (folder / "imgs").mkdir(parents=True)
    rel = []
    for k, p in enumerate(df["path"][:3]):
        shutil.copyfile(p, folder / "imgs" / f"{k}.jpg")
        rel.append(f"imgs/{k}.jpg")
    small = df.iloc[:3].copy()
    small["path"] = rel
    small.to_csv(folder / "pred.csv", index=False)
    (folder / "pred_differential.json").write_text(json.dumps({"atypical_classes": ["ig"]}))
    monkeypatch.chdir(tmp_path)  # not where the images are relative to
    res = write_review_page(folder / "pred.csv", tmp_path / "page", masks=False)
    assert res.missing == []  # found beside the CSV
    data = _data(tmp_path / "page")
    assert [c["f"] for c in data["cells"]] == [str(folder / r) for r in rel]
    assert data["atypical"] == ["ig"]
    res = write_review_page(folder / "pred.csv", tmp_path / "page", masks=False,
                            base_dir=tmp_path / "elsewhere")
    assert res.missing == rel
