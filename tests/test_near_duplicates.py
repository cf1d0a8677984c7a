"""Near-duplicates: the same cell saved again is found, distinct cells are not, and training
keeps the copies in one cross-validation fold (real PBC images, copies made in the test)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import pbc_subset
from PIL import Image

from morphocell.errors import DataError
from morphocell.near_duplicates import (
    NEAR_DUPLICATE_BITS,
    hash_distance,
    image_hashes,
    miss_probability,
    near_duplicate_groups,
    near_duplicate_pairs,
)


def _resave(src: str, dst, *, flip=False, quarter_turns=0, scale=1.0, gain=1.0, quality=80):
    im = Image.open(src).convert("RGB")
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if quarter_turns:
        im = im.rotate(90 * quarter_turns, expand=True)
    if scale != 1.0:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
    if gain != 1.0:
        a = np.asarray(im).astype(np.float64) * gain
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    im.save(dst, "JPEG", quality=quality)
    return str(dst)


def _class_paths(label: str, n: int) -> list[str]:
    return [p for p, lab in pbc_subset(n) if lab == label]


def test_a_resaved_cell_is_found_among_distinct_cells(data_dir, tmp_path):
    paths = _class_paths("neutrophil", 40)
    src = paths[3]
    copies = [
        _resave(src, tmp_path / "q80_flip.jpg", flip=True, quality=80),
        _resave(src, tmp_path / "rot90.jpg", quarter_turns=1, quality=90),
        _resave(src, tmp_path / "small.jpg", scale=0.9, quality=90),
        _resave(src, tmp_path / "bright.jpg", gain=1.1, quality=85),
    ]
    hashes, ok = image_hashes([*paths, *copies])
    assert ok.all()
    # each copy: within the threshold of its image, farther than it from every other cell
    n = len(paths)
    for k in range(len(copies)):
        d = hash_distance(np.broadcast_to(hashes[n + k], hashes[:n].shape), hashes[:n])
        assert d[3] <= NEAR_DUPLICATE_BITS
        assert np.delete(d, 3).min() > NEAR_DUPLICATE_BITS
    pairs, dist = near_duplicate_pairs(hashes, ok)
    found = {tuple(p) for p in pairs.tolist()}
    assert {(3, n + k) for k in range(len(copies))} <= found
    assert all(3 in p or min(p) >= n for p in found)  # no pair of two distinct cells
    assert (dist <= NEAR_DUPLICATE_BITS).all()
    groups = near_duplicate_groups(pairs, n + len(copies))
    assert groups == [[3, *range(n, n + len(copies))]]


def test_distinct_cells_of_one_class_give_no_pair(data_dir):
    paths = _class_paths("neutrophil", 200)
    assert len(paths) == 200
    hashes, ok = image_hashes(paths)
    assert ok.all()
    pairs, _ = near_duplicate_pairs(hashes, ok)
    assert len(pairs) == 0
    # the exhaustive check agrees: no two distinct cells within the threshold
    nearest = min(np.sort(hash_distance(np.broadcast_to(h, hashes.shape), hashes))[1]
                  for h in hashes)
    assert nearest > NEAR_DUPLICATE_BITS


def test_unreadable_files_are_left_out(data_dir, tmp_path):
    good = _class_paths("lymphocyte", 5)[:2]
    bad = tmp_path / "not_an_image.jpg"
    bad.write_bytes(b"hello")
    hashes, ok = image_hashes([good[0], str(bad), good[1], str(tmp_path / "missing.jpg")])
    assert ok.tolist() == [True, False, True, False]
    pairs, _ = near_duplicate_pairs(hashes, ok)
    assert len(pairs) == 0  # the two unreadable files (zero hashes) are not a pair


def test_miss_probability_is_small_at_the_threshold():
    assert miss_probability(NEAR_DUPLICATE_BITS) < 0.01
    assert miss_probability(NEAR_DUPLICATE_BITS // 2) < miss_probability(NEAR_DUPLICATE_BITS)


def _small():
    from morphocell.ensembles import BaseLearner

    return {"estimators": [("rf", BaseLearner("rf", params={"n_estimators": 10}))]}


def test_train_keeps_near_duplicates_in_one_fold_and_refuses_two_labels(data_dir, tmp_path,
                                                                         monkeypatch):
    from morphocell.ensembles.stacking import StackedCellClassifier
    from morphocell.train import train

    seen = {}
    fit = StackedCellClassifier.fit

    def recording_fit(self, X, y, groups=None):
        seen["groups"] = None if groups is None else np.asarray(groups).copy()
        return fit(self, X, y, groups=groups)

    monkeypatch.setattr(StackedCellClassifier, "fit", recording_fit)

    rows = pbc_subset(3)
    paths, labels = [p for p, _ in rows], [lab for _, lab in rows]
    copy = _resave(paths[0], tmp_path / "resaved.jpg", flip=True, quality=80)
    res = train([*paths, copy], [*labels, labels[0]], cv=3, families=("shape", "color"),
                domain_copies=0, estimator_params=_small(), cache_dir=tmp_path / "c")
    assert res.duplicates == []
    assert res.near_duplicates == [[paths[0], copy]]
    assert res.metadata["n_duplicates"] == 0 and res.metadata["n_used"] == len(paths) + 1
    # the stack's folds are drawn by group: the image and its copy share one, no one else
    g = seen["groups"]
    n = len(paths)
    assert g is not None and len(g) == n + 1
    assert g[0] == g[n] and (g[1:n] != g[0]).all() and len(set(g.tolist())) == n
    # the same cell with another label: refused, naming both files
    other = "monocyte" if labels[0] != "monocyte" else "basophil"
    with pytest.raises(DataError, match="near-duplicates") as e:
        train([*paths, copy], [*labels, other], cv=2, families=("shape",), domain_copies=0)
    assert paths[0] in str(e.value) and copy in str(e.value)


def test_cv_groups_join_exact_and_near_duplicates(data_dir, tmp_path):
    import shutil

    from morphocell._train_record import content_groups, near_duplicates
    from morphocell.train import _content_group_ids

    paths = _class_paths("eosinophil", 10)[:6]
    same = tmp_path / "same.jpg"
    shutil.copy(paths[1], same)
    near = _resave(paths[1], tmp_path / "near.jpg", quarter_turns=3, quality=80)
    allp = [*paths, str(same), near]
    labels = ["eosinophil"] * len(allp)
    hashes, dups = content_groups(allp)
    assert dups == [[1, 6]]
    groups_near, linked = near_duplicates(allp, labels, hashes, dups)
    assert groups_near == [[1, 7]]
    assert linked == [[1, 6, 7]]
    ids = _content_group_ids(len(allp), linked, np.ones(len(allp), bool))
    assert ids[1] == ids[6] == ids[7]
    assert len(set(ids.tolist())) == len(paths)


def test_cli_warning_names_the_files_and_the_count(capsys):
    from morphocell.cli.train import _warn_near_duplicates

    _warn_near_duplicates([[f"a{i}.jpg", f"b{i}.jpg"] for i in range(5)], "handcrafted")
    err = capsys.readouterr().err
    assert "5 files are near-duplicates" in err and "a0.jpg ~ b0.jpg" in err
    assert "a3.jpg" not in err and "2 more groups" in err
    _warn_near_duplicates([], "handcrafted")
    assert capsys.readouterr().err == ""


def test_popcount_without_numpy_bitwise_count(monkeypatch):
    from morphocell import near_duplicates as nd

    x = np.random.default_rng(0).integers(0, 2**63, size=(5, 8, 4), dtype=np.uint64)
    want = np.array([[[int(v).bit_count() for v in w] for w in r] for r in x])
    if hasattr(np, "bitwise_count"):
        np.testing.assert_array_equal(nd._popcount(x), want)
        monkeypatch.delattr(np, "bitwise_count")
    np.testing.assert_array_equal(nd._popcount(x), want)
