"""The review page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, the page opened from disk (``file://``).

Real predictions (see ``test_review.review_predictions``): the 80 bundled sample images and
201 cells (160 PBC test images, 40 segwbc images, one PBC image under a hostile file name).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_review import HOSTILE, repeated_images_predictions, review_predictions

from morphocell.review import ARTEFACT_LABEL, wilson_interval, write_review_page


def _find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = _find_chromium()
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium browser / chromedriver found (Debian: apt-get install chromium "
           "chromium-driver); the review page's browser tests need one")

#: classes reported apart from the WBC differential (per 100 WBC / counted apart)
APART = {"erythroblast", "platelet"}


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior",
                           {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def preds(data_dir, tmp_path_factory):
    return review_predictions(tmp_path_factory)


@pytest.fixture(scope="module")
def cells_page(preds, tmp_path_factory):
    out = tmp_path_factory.mktemp("cells_page")
    write_review_page(preds["cells_csv"], out)
    return out, pd.read_csv(preds["cells_csv"], dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def sample_page(preds, tmp_path_factory):
    out = tmp_path_factory.mktemp("sample_page")
    write_review_page(preds["sample_csv"], out)
    return out, pd.read_csv(preds["sample_csv"], dtype=str, keep_default_na=False)


def _open(driver, folder: Path, clear: bool = True):
    driver.get(folder.joinpath("index.html").as_uri())
    if clear:
        driver.execute_script("localStorage.clear()")
        driver.refresh()
    _wait(driver, "return document.documentElement.dataset.ready === '1'")


def _wait(driver, script: str, timeout: float = 10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = driver.execute_script(script)
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {script}")


def _cells(driver) -> list[tuple[str, str]]:
    return [tuple(x) for x in driver.execute_script(
        "return [...document.querySelectorAll('[data-path]')]"
        ".map(e => [e.dataset.path, e.dataset.class])")]


def _table(driver) -> dict[str, list[str]]:
    """The differential's rows: data-row -> [key, name, count, %, CI, review] texts."""
    return {k: v for k, v in driver.execute_script(
        "return [...document.querySelectorAll('#differential tr[data-row]')]"
        ".map(r => [r.dataset.row, [...r.cells].map(c => c.textContent)])")}


def _expected_table(counts: dict) -> dict[str, tuple[str, str, str]]:
    """count, % of WBC and Wilson interval texts that the page must show."""
    n = sum(k for c, k in counts.items() if c not in APART)
    out = {}
    for c, k in counts.items():
        if c in APART:
            out[c] = (str(k),)
            continue
        lo, hi = wilson_interval(k, n)
        out[c] = (str(k), f"{100 * k / n:.1f}", f"{100 * lo:.1f}–{100 * hi:.1f}")
    return out


def _check_table(driver, counts: dict):
    table = _table(driver)
    for c, exp in _expected_table(counts).items():
        assert tuple(table[c][2:2 + len(exp)]) == exp, (c, table[c], exp)
    assert table["wbc"][2] == str(sum(k for c, k in counts.items() if c not in APART))


def _press(driver, *keys):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def _selected(driver) -> tuple[str, str]:
    return tuple(driver.execute_script(
        "const e = document.querySelector('.cell.selected');"
        "return [e.dataset.path, e.dataset.class]"))


@pytest.mark.parametrize("page", ["sample_page", "cells_page"])
def test_one_element_per_row_and_the_differential(browser, page, request):
    folder, df = request.getfixturevalue(page)
    _open(browser, folder)
    cells = _cells(browser)
    assert len(cells) == len(df)
    assert sorted(cells) == sorted(zip(df["path"], df["predicted"], strict=True))
    classes = [c[2:] for c in df.columns if c.startswith("p_") and c != "p_atypical"]
    _check_table(browser, {c: int((df["predicted"] == c).sum()) for c in classes})
    # grouped by class, least sure first within each group
    order = browser.execute_script(
        "return [...document.querySelectorAll('.group')].map(g => [g.dataset.group,"
        " [...g.querySelectorAll('.cell')].map(e => e.dataset.path)])")
    p_of = {(r["path"], r["predicted"]): float(r[f"p_{r['predicted']}"]) for _, r in df.iterrows()}
    for group, paths in order:
        if group in classes:
            conf = [round(p_of[(p, group)], 4) for p in paths]  # as the page holds them
            assert conf == sorted(conf)


def test_relabel_undo_export_and_reload(browser, cells_page, downloads):
    from morphocell.io import load_manifest, resolve_inputs

    folder, df = cells_page
    _open(browser, folder)
    classes = [c[2:] for c in df.columns if c.startswith("p_") and c != "p_atypical"]
    counts = {c: int((df["predicted"] == c).sum()) for c in classes}
    changed = {}
    for k in range(3):
        if k:
            _press(browser, "\ue014")  # ArrowRight: skip one cell
        path, old = _selected(browser)
        if k < 2:
            new = next(c for c in classes if c != old and c not in APART)
            key = str(classes.index(new) + 1)
        else:
            new, key = ARTEFACT_LABEL, "0"
        _press(browser, key)
        changed[path] = new
        counts[old] -= 1
        if new in counts:
            counts[new] += 1
    cells = dict(_cells(browser))
    for path, new in changed.items():
        assert cells[path] == new
    _check_table(browser, counts)
    assert _table(browser)[ARTEFACT_LABEL][2] == "1"
    assert browser.find_element("id", "flag-corrected").text.startswith("3 cells relabelled")

    # undo the last change, then make it again
    last = list(changed)[-1]
    _press(browser, "z")
    assert dict(_cells(browser))[last] != ARTEFACT_LABEL
    assert _table(browser)[ARTEFACT_LABEL][2] == "0"
    assert _selected(browser)[0] == last
    _press(browser, "0")
    assert dict(_cells(browser))[last] == ARTEFACT_LABEL
    _check_table(browser, counts)

    # export: a labels.csv that the project's readers take as it is
    target = downloads / "labels.csv"
    if target.exists():
        target.unlink()
    browser.find_element("id", "export").click()
    t0 = time.monotonic()
    while not target.is_file() and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    paths, labels = load_manifest(target)
    assert (paths, labels) == resolve_inputs([target])
    expected = dict(zip(df["path"], df["predicted"], strict=True))
    expected.update(changed)
    expected = {p: c for p, c in expected.items() if c != ARTEFACT_LABEL}  # left out
    assert dict(zip(paths, labels, strict=True)) == expected
    assert len(paths) == len(df) - 1 and all(Path(p).is_file() for p in paths)
    assert set(labels) <= set(classes)  # what morphocell adapt accepts: the model's classes

    # reload: the corrections are kept
    before = _table(browser)
    _open(browser, folder, clear=False)
    cells = dict(_cells(browser))
    assert {p: cells[p] for p in changed} == changed
    assert _table(browser) == before


def _all_thumbnails_loaded(driver) -> int:
    """Scroll through the page so that every lazily loaded thumbnail loads; their number."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    for y in range(0, height + 900, 600):
        driver.execute_script("window.scrollTo(0, arguments[0])", y)
        time.sleep(0.03)
    return _wait(driver, "const i = [...document.querySelectorAll('.cell img')];"
                 "return i.every(e => e.complete && e.naturalWidth > 0) && i.length")


def test_lazy_loading_and_no_request_leaves_the_folder(browser, cells_page):
    folder, df = cells_page
    browser.get_log("performance")  # drop what earlier tests logged
    _open(browser, folder)
    first = _wait(browser, "return document.querySelectorAll('.cell img[src]').length")
    time.sleep(0.3)
    first = browser.execute_script("return document.querySelectorAll('.cell img[src]').length")
    assert 0 < first < len(df)  # only the thumbnails near the window load at first
    assert _all_thumbnails_loaded(browser) == len(df)
    browser.execute_script("window.scrollTo(0, 0)")
    _press(browser, "\ue007")  # Enter: the detail panel loads the full image and outlines
    _wait(browser, "return document.querySelector('#viewer img.full').naturalWidth > 0")
    urls = set()
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] == "Network.requestWillBeSent":
            urls.add(msg["params"]["request"]["url"])
    urls |= set(browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"))
    base = folder.as_uri() + "/"
    assert len(urls) > len(df)
    outside = sorted(u for u in urls if not u.startswith(base))
    assert outside == []


def test_hostile_file_name_runs_nothing(browser, cells_page, preds):
    folder, _ = cells_page
    _open(browser, folder)
    title = browser.title
    _all_thumbnails_loaded(browser)
    hostile = str(preds["hostile"])
    el = browser.execute_script(
        "return [...document.querySelectorAll('.cell')].find(e => e.dataset.path === arguments[0])",
        hostile)
    assert el is not None
    assert el.find_element("css selector", "figcaption .name").get_attribute(
        "textContent") == HOSTILE
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.click()
    _wait(browser, "return !document.getElementById('detail').hidden")
    assert browser.find_element("id", "detail-path").text == hostile
    assert browser.execute_script("return document.querySelectorAll('img[src=\"q\"]').length") == 0
    time.sleep(0.2)
    assert browser.title == title and "pwned" not in browser.title
    _press(browser, "\ue00c")  # Escape


def test_detail_panel(browser, cells_page):
    from morphocell.features.extractor import extract_features
    from morphocell.io import read_image
    from morphocell.segmentation import segment

    folder, df = cells_page
    _open(browser, folder)
    path, cls = _selected(browser)
    _press(browser, "\ue007")  # Enter
    _wait(browser, "return [...document.querySelectorAll('#viewer img')]"
          ".every(e => e.complete && e.naturalWidth > 0)")
    img = read_image(path)
    dims = browser.execute_script(
        "return [...document.querySelectorAll('#viewer img')].map(e => [e.className, "
        "e.naturalWidth, e.naturalHeight, getComputedStyle(e).display])")
    assert sorted(d[0] for d in dims) == ["full", "outline cytoplasm", "outline nucleus"]
    assert all((w, h) == (img.shape[1], img.shape[0]) and disp != "none"
               for _, w, h, disp in dims)
    _press(browser, "n")  # the nucleus outline off, the cytoplasm outline still on
    shown = dict(browser.execute_script(
        "return [...document.querySelectorAll('#viewer img.outline')].map(e => "
        "[e.classList.contains('nucleus') ? 'n' : 'c', getComputedStyle(e).display])"))
    assert shown == {"n": "none", "c": "block"}
    _press(browser, "n")
    row = df[df["path"] == path].iloc[0]
    classes = [c[2:] for c in df.columns if c.startswith("p_") and c != "p_atypical"]
    p = np.array([float(row[f"p_{c}"]) for c in classes])
    top = browser.execute_script(
        "return [...document.querySelectorAll('#detail-top tr')].map(r => "
        "[r.cells[0].textContent, r.cells[2].textContent])")
    assert [t[0] for t in top] == [classes[k] for k in np.argsort(-p, kind="stable")[:3]]
    assert [float(t[1].rstrip("%")) for t in top] == pytest.approx(
        100 * np.sort(p)[::-1][:3], abs=0.06)
    assert top[0][0] == cls
    feats = extract_features(img, segment(img))
    shown = browser.execute_script(
        "return [...document.querySelectorAll('#detail-features tr')].map(r => "
        "[r.cells[0].title.split(':')[0], r.cells[1].textContent, r.cells[2].textContent])")
    assert len(shown) >= 4
    for name, value, unit in shown:
        assert float(value) == pytest.approx(feats[name], rel=0.01, abs=0.006), name
    units = {name: unit for name, _, unit in shown}
    assert units["Nucleus_Shape_Area"] == "px²"
    _press(browser, "\ue00c")  # Escape
    assert browser.execute_script("return document.getElementById('detail').hidden")


def test_filter_shows_only_cells_needing_review(browser, cells_page):
    folder, df = cells_page
    _open(browser, folder)
    n_review = int((df["needs_review"] == "True").sum())
    assert 0 < n_review < len(df)
    _press(browser, "r")
    visible = browser.execute_script(
        "return [...document.querySelectorAll('.cell')]"
        ".filter(e => getComputedStyle(e).display !== 'none').map(e => e.dataset.path)")
    assert sorted(visible) == sorted(df.loc[df["needs_review"] == "True", "path"])
    _press(browser, "r")


def test_missing_and_unclassified_images(browser, preds, tmp_path):
    """An image moved away after predict shows a placeholder and stays counted; an image that
    predict could not read sits under "Not classified" until the reviewer gives it a class."""
    from morphocell.cli import main

    sample = pd.read_csv(preds["sample_csv"], dtype=str, keep_default_na=False)
    keep = [tmp_path / f"cell{k}.jpg" for k in range(4)]
    for src, dst in zip(sample["path"][::20], keep, strict=True):
        shutil.copyfile(src, dst)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    man = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(p) for p in keep + [corrupt]]}).to_csv(man, index=False)
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(preds["model"]), str(man), "--out", str(pred), "-q"]) == 3
    keep[2].unlink()
    res = write_review_page(pred, tmp_path / "page")
    assert res.missing == [str(keep[2])] and res.n_classified == 4
    _open(browser, tmp_path / "page")
    placeholders = dict(browser.execute_script(
        "return [...document.querySelectorAll('.cell.missing')].map(e => "
        "[e.dataset.path, e.querySelector('.placeholder').textContent])"))
    assert placeholders == {str(keep[2]): "image missing", str(corrupt): "not readable"}
    cells = dict(_cells(browser))
    assert cells[str(corrupt)] == "" and cells[str(keep[2])] != ""
    table = _table(browser)
    assert table["unclassified"][2] == "1"
    n_wbc = int(table["wbc"][2])
    text = browser.execute_script("return window.MorphocellReview.exportText()")
    assert str(keep[2]) not in text and str(corrupt) not in text
    assert text.count("\n") == 4  # header + the 3 classified cells still on disk
    # the reviewer classifies the unreadable image: it is counted and exported
    browser.execute_script(
        "[...document.querySelectorAll('.cell')].find(e => e.dataset.path === arguments[0])"
        ".focus()", str(corrupt))
    _press(browser, "6")
    classes = browser.execute_script("return window.MORPHOCELL_REVIEW.classes")
    assert dict(_cells(browser))[str(corrupt)] == classes[5]
    table = _table(browser)
    assert table["unclassified"][2] == "0"
    assert int(table["wbc"][2]) == n_wbc + (classes[5] not in APART)
    text = browser.execute_script("return window.MorphocellReview.exportText()")
    assert f"{corrupt},{classes[5]}" in text.splitlines()


def test_a_repeated_image_is_one_cell(browser, preds, tmp_path):
    pred = repeated_images_predictions(preds["model"], tmp_path)
    write_review_page(pred, tmp_path / "page")
    df = pd.read_csv(pred, dtype=str, keep_default_na=False)
    _open(browser, tmp_path / "page")
    assert len(_cells(browser)) == 4
    classes = browser.execute_script("return window.MORPHOCELL_REVIEW.classes")
    before = {c: int(_table(browser)[c][2]) for c in classes}
    assert sum(before.values()) == 2
    # relabel the copy of B (row 3): B (row 1) follows, and the count moves by one cell
    old = df["predicted"][1]
    new = next(c for c in classes if c != old)
    browser.execute_script("document.querySelectorAll('.cell')"
                           "[[...document.querySelectorAll('.cell')].findIndex(e => "
                           "e.dataset.index === '3')].focus()")
    _press(browser, str(classes.index(new) + 1))
    rows = browser.execute_script(
        "return [...document.querySelectorAll('.cell')].map(e => [Number(e.dataset.index), "
        "e.dataset.class])")
    labels = dict(rows)
    assert labels[1] == labels[3] == new
    after = {c: int(_table(browser)[c][2]) for c in classes}
    assert after[old] == before[old] - 1 and after[new] == before[new] + 1
    text = browser.execute_script("return window.MorphocellReview.exportText()")
    assert text.splitlines()[1:] == [f"{df['path'][0]},{labels[0]}", f"{df['path'][1]},{new}"]

