"""The command line as a user meets it: every sub-command end to end on real images, help
with a description and an example, one exit-code table (0 success; 3 some inputs failed, the
good results written; 2 user error; 1 internal error), one clear line per error."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, pbc_subset

from morphocell.cli import COMMANDS, EXIT_OK, EXIT_PARTIAL, EXIT_USER, main

NAMES = [c.replace("_", "-") for c in COMMANDS]


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "morphocell.cli", *map(str, args)],
                          capture_output=True, text=True, check=False, **kw)


def _manifest(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return path


def _blank(path):
    """A readable image without any cell (a flat background)."""
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 235, np.uint8)).save(path)
    return str(path)


# -- the parser -------------------------------------------------------------------------------
def test_top_level_help_lists_every_command_and_the_exit_codes():
    out = run("--help")
    assert out.returncode == 0
    for c in NAMES:
        assert c in out.stdout
    assert "Exit codes: 0 success; 3 some inputs failed" in out.stdout


@pytest.mark.parametrize("command", NAMES)
def test_every_subcommand_has_help_with_a_description_and_an_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: morphocell " + command)
    usage_end = text.index("\n\n")
    description = text[usage_end:text.index("options:")]
    assert len(description.split()) >= 15                        # says what it does
    example = text[text.index("\nexample:\n"):]
    assert f"morphocell {command}" in example                    # shows how
    if "--n-jobs" in text:
        assert "worker processes (default: 1)" in text           # defaults are shown
    assert "(default: None)" not in text


def test_commands_are_modules_with_add_parser_and_run():
    import importlib

    for name in COMMANDS:
        mod = importlib.import_module(f"morphocell.cli.{name}")
        assert callable(mod.add_parser) and callable(mod.run), name


def test_train_review_accuracy_default_is_the_library_default(capsys):
    from morphocell.cli import build_parser
    from morphocell.report import REVIEW_ACCURACY

    args = build_parser().parse_args(["train", "d", "--out", "m"])
    assert args.review_accuracy == REVIEW_ACCURACY


def test_version():
    from morphocell import __version__

    out = run("--version")
    assert out.returncode == 0 and __version__ in out.stdout


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == EXIT_USER
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["train", "/nonexistent/folder", "--out", "m.mcm"], "/nonexistent/folder"),
    (["segment", "/nonexistent/img.jpg", "/nonexistent/img2.jpg", "--out", "{tmp}"],
     "file not found"),
])
def test_user_errors_have_a_message_and_no_traceback(argv, needle, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = run(*argv, cwd=tmp_path)
    assert out.returncode == EXIT_USER, out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_debug_shows_the_traceback(tmp_path):
    out = run("--debug", "train", "/nonexistent/folder", "--out", "m.mcm", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_parser_is_importable_without_heavy_modules():
    code = ("import sys; from morphocell.cli import build_parser; build_parser(); "
            "print([m for m in ('tensorflow', 'dask', 'xgboost', 'sklearn', 'pandas') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_internal_errors_are_one_line_exit_1(monkeypatch, capsys):
    from morphocell.cli import segment

    def boom(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(segment, "run", boom)
    assert main(["segment", "x.jpg", "--out", "o"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: ZeroDivisionError" in err[0]
    assert "--debug" in err[0]


# -- segment, crop, features ------------------------------------------------------------------
def test_segment_exit_codes(data_dir, tmp_path, capsys):
    good = pbc_subset(1)[0][0]
    blank = _blank(tmp_path / "blank.png")
    assert main(["segment", good, "--out", str(tmp_path / "a"), "-q"]) == EXIT_OK
    assert main(["segment", good, blank, "--out", str(tmp_path / "b"), "-q"]) == EXIT_PARTIAL
    assert "blank.png: no cell found" in capsys.readouterr().err
    assert main(["segment", blank, "--out", str(tmp_path / "c"), "-q"]) == EXIT_USER
    err = capsys.readouterr().err
    assert "could not segment" in err and "no cell found" in err
    assert main(["segment", str(tmp_path / "cellz"), "--out", str(tmp_path / "d"),
                 "-q"]) == EXIT_USER


def test_crop_on_real_fields(data_dir, tmp_path, capsys):
    fields = [str(DATA / "bccd" / "images" / f"BloodImage_0000{i}.jpg") for i in range(2)]
    out = tmp_path / "cells"
    assert main(["crop", *fields, "--out", str(out), "-q"]) == EXIT_OK
    table = pd.read_csv(out / "cells.csv")
    assert set(table["field"]) == set(fields) and (table["status"] == "ok").any()
    assert all((out / c.rsplit("/", 1)[-1]).is_file() for c in table["crop"].dropna())
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    assert main(["crop", fields[0], str(broken), "--out", str(tmp_path / "c2"),
                 "-q"]) == EXIT_PARTIAL
    assert main(["crop", str(broken), "--out", str(tmp_path / "c3"), "-q"]) == EXIT_USER
    assert main(["crop", fields[0], "--out", str(tmp_path / "c4"), "--size", "8"]) == EXIT_USER
    assert "--size must be at least 16" in capsys.readouterr().err


def test_features_exit_codes(data_dir, tmp_path, capsys):
    from morphocell.batch import read_features

    good = pbc_subset(1)[0][0]
    blank = _blank(tmp_path / "blank.png")
    args = ["--families", "shape", "-q"]
    assert main(["features", good, "--out", str(tmp_path / "a"), *args]) == EXIT_OK
    assert main(["features", good, blank, "--out", str(tmp_path / "b"), *args]) == EXIT_PARTIAL
    assert list(read_features(tmp_path / "b")["status"]) == ["ok", "no_cell"]
    capsys.readouterr()
    assert main(["features", blank, "--out", str(tmp_path / "c"), *args]) == EXIT_USER
    assert "no image could be measured" in capsys.readouterr().err
    assert main(["features", str(tmp_path / "cellz"), "--out", str(tmp_path / "d"),
                 *args]) == EXIT_USER
    err = capsys.readouterr().err
    assert "cellz: " in err and ("not found" in err or "no such" in err)


def test_segment_mirrors_subfolders_and_writes_a_mapping(data_dir, tmp_path, capsys):
    """dataset1/001_image.png and dataset2/001_image.png do not collide: the outputs mirror
    the inputs' folders under --out, masks.csv maps each input to its files, a rerun refuses
    to replace them (exit 2, one error line) unless --overwrite; the expert masks beside the
    images are skipped and counted; a renamed mask is still recognised as a mask."""
    from morphocell.io import is_derived, list_entries, read_image

    src = tmp_path / "in"
    for d in ("dataset1", "dataset2"):
        (src / d).mkdir(parents=True)
        for name in ("001_image.png", "001_mask.png"):
            shutil.copyfile(DATA / "segwbc" / d / name, src / d / name)
    out = tmp_path / "out"
    argv = ["segment", str(src / "dataset1"), str(src / "dataset2"), "--out", str(out), "-q"]
    assert main(argv) == EXIT_OK
    assert "skipped 2 masks and overlays" in capsys.readouterr().err
    table = pd.read_csv(out / "masks.csv", keep_default_na=False)
    dirs = ("dataset1", "dataset2")
    assert list(table["path"]) == [str(src / d / "001_image.png") for d in dirs]
    assert list(table["mask"]) == [f"{d}/001_image_mask.png" for d in dirs]
    assert list(table["overlay"]) == [f"{d}/001_image_overlay.png" for d in dirs]
    assert list(table["status"]) == ["ok", "ok"]
    for d in dirs:  # each mask is its own image's (the two images differ in size)
        mask = read_image(out / d / "001_image_mask.png")
        assert mask.shape == read_image(src / d / "001_image.png").shape
    renamed = tmp_path / "cells" / "017.png"
    renamed.parent.mkdir()
    shutil.copyfile(out / "dataset1" / "001_image_mask.png", renamed)
    assert is_derived(renamed)
    with pytest.raises(Exception, match="no images found"):
        list_entries(renamed.parent)
    stamp = (out / "masks.csv").stat().st_mtime_ns
    assert main(argv) == EXIT_USER
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "--overwrite" in errors[0] and "masks.csv" in errors[0]
    assert (out / "masks.csv").stat().st_mtime_ns == stamp
    assert main([*argv, "--overwrite"]) == EXIT_OK


def test_layout_option_and_listing_notes(pbc_small, tmp_path, capsys):
    """A folder of cells whose masks were written into a subfolder of it: an error naming
    both (exit 2, nothing written) until --layout says which reading; the ignored folder and
    the skipped masks are said on stderr."""
    from morphocell.batch import read_features

    cells = tmp_path / "cells"
    cells.mkdir()
    for p, _ in pbc_small[:3]:
        shutil.copy(p, cells)
    assert main(["segment", str(cells), "--out", str(cells / "masks"), "-q"]) == EXIT_OK
    capsys.readouterr()
    args = ["--families", "shape", "-q"]
    assert main(["features", str(cells), "--out", str(tmp_path / "f"), *args]) == EXIT_USER
    err = capsys.readouterr().err
    assert "--layout flat|classes" in err and "masks/" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "f").exists()
    assert main(["features", str(cells), "--layout", "flat", "--out", str(tmp_path / "f"),
                 *args]) == EXIT_OK
    assert "ignored 1 folder" in capsys.readouterr().err
    assert len(read_features(tmp_path / "f")) == 3
    assert main(["features", str(cells), "--layout", "classes", "--out", str(tmp_path / "g"),
                 *args]) == EXIT_USER
    assert "6 masks/overlays written by morphocell skipped" in capsys.readouterr().err
    assert main(["segment", str(cells), "--layout", "flat", "--out", str(tmp_path / "m"),
                 "-q"]) == EXIT_OK
    assert len(pd.read_csv(tmp_path / "m" / "masks.csv")) == 3


def test_train_refuses_an_empty_class_folder(pbc_small, tmp_path, capsys):
    root = tmp_path / "data"
    for p, lab in pbc_small[:6]:
        (root / lab).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / lab)
    (root / "monocyte").mkdir()
    rc = main(["train", str(root), "--out", str(tmp_path / "m.mcm"), "-q",
               "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == EXIT_USER and "monocyte" in err and "holds no image" in err
    assert not (tmp_path / "m.mcm").exists() and not (tmp_path / "c").exists()


def test_train_segmenter_needs_its_data(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("MORPHOCELL_DATA", raising=False)
    assert main(["train-segmenter", "--out", str(tmp_path / "w.keras")]) == EXIT_USER
    err = capsys.readouterr().err
    assert "--data" in err and "MORPHOCELL_DATA" in err and len(err.strip().splitlines()) == 1


# -- train, predict, evaluate -----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """`morphocell train` on 5 real images per class plus one corrupt and one missing file."""
    tmp = tmp_path_factory.mktemp("train")
    corrupt = tmp / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = pbc_subset(5) + [(str(corrupt), "neutrophil"), (str(tmp / "gone.jpg"), "ig")]
    man = _manifest(tmp / "train.csv", rows)
    model = tmp / "model.mcm"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["train", str(man), "--out", str(model), "--cv", "2",
                   "--cache-dir", str(tmp / "cache"), "-q"])
    return tmp, man, model, rows, (rc, out.getvalue(), err.getvalue())


def test_train_cli(trained):
    tmp, _, model, rows, (rc, out, err) = trained
    assert rc == EXIT_PARTIAL, err          # some images failed, the model was still written
    assert model.is_file()
    assert "corrupt.jpg" in err and "gone.jpg" in err and "Traceback" not in err
    assert err.count("gone.jpg") == 1       # the path once per failure
    assert "CV accuracy" in out and "stack" in out
    assert "40 images used, 2 failed" in out and "(8 classes," in out
    explain = tmp / "model_explain"
    top = pd.read_csv(explain / "top_features.csv")
    assert set(top["class"]) == {lab for _, lab in rows[:40]}
    assert (explain / "top_features.png").stat().st_size > 1000
    meta = json.loads((explain / "training.json").read_text())["metadata"]
    assert meta["n_used"] == 40 and meta["n_failed"] == 2 and len(meta["data_sha256"]) == 64
    # on by default: one domain-randomised copy of round(0.35 * 5) = 2 images per class
    assert meta["domain_copies"] == 0.35 and meta["n_domain_copies"] == 16
    assert "over the images and their 16 domain-randomised copies" in out
    # the review threshold, chosen on the 40 images' out-of-fold probabilities (not the copies)
    r = meta["review"]
    assert r["n"] == 40 and r["target_accuracy"] == 0.995
    assert 0 <= r["review_fraction"] <= 1 and "review threshold" in out


def test_train_cli_user_errors(data_dir, tmp_path, capsys):
    from morphocell.datasets import sample_folder

    rc = main(["train", str(sample_folder()), "--out", str(tmp_path / "m.mcm"),
               "--review-accuracy", "1.5", "--cache-dir", str(tmp_path / "c"), "-q"])
    assert rc == EXIT_USER and "(0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "m.mcm").exists()
    rc = main(["train", str(tmp_path / "none.csv"), "--out", str(tmp_path / "m.mcm"),
               "--features", "deep", "--domain-copies", "0.3"])
    assert rc == EXIT_USER and "hand-crafted learners" in capsys.readouterr().err
    one = _manifest(tmp_path / "one.csv", [r for r in pbc_subset(3) if r[1] == "monocyte"])
    rc = main(["train", str(one), "--out", str(tmp_path / "m.mcm"), "-q",
               "--cache-dir", str(tmp_path / "c1")])
    err = capsys.readouterr().err
    assert rc == EXIT_USER and "got 1 class (monocyte)" in err and "np.str_" not in err


def test_predict_cli_and_differential_count(trained, capsys, tmp_path):
    _, _, model, _, _ = trained
    test_rows = pbc_subset(2, split="test")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    out_csv = tmp_path / "pred.csv"
    rc = main(["predict", str(model), *[p for p, _ in test_rows], str(bad),
               "--out", str(out_csv), "-q"])
    out, err = capsys.readouterr()
    assert rc == EXIT_PARTIAL and "bad.png" in err and "Traceback" not in err
    df = pd.read_csv(out_csv, keep_default_na=False)
    classes = sorted({lab for _, lab in test_rows})
    assert list(df.columns) == (["path", "predicted"] + [f"p_{c}" for c in classes]
                                + ["p_atypical", "domain_score", "unlike_training",
                                   "needs_review", "status", "error"])
    ok = df[df["status"] == "ok"]
    assert len(ok) == 16 and df.iloc[-1]["status"] == "error"
    assert np.isfinite(ok["domain_score"].astype(float)).all()
    assert df.iloc[-1]["domain_score"] == "" and str(df.iloc[-1]["unlike_training"]) == "False"
    assert "empty file" in df.iloc[-1]["error"]
    P = ok[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    assert (ok["predicted"].to_numpy() == np.asarray(classes)[P.argmax(axis=1)]).all()
    np.testing.assert_allclose(ok["p_atypical"].astype(float),
                               ok["p_erythroblast"].astype(float) + ok["p_ig"].astype(float),
                               atol=2e-6)
    # the differential count agrees with the table
    count = json.loads((tmp_path / "pred_differential.json").read_text())
    vc = ok["predicted"].value_counts()
    assert count["counts"] == {c: int(vc.get(c, 0)) for c in classes}
    assert count["n_classified"] == 16 and count["n_failed"] == 1 and count["n_images"] == 17
    assert abs(sum(count["percent"].values()) - 100) < 0.05
    assert count["flagged"] == [c for c in ("erythroblast", "ig") if vc.get(c, 0) > 0]
    assert "Differential count (16 cells classified, 1 failed)" in out
    # as a hematology report: WBC differential per 100 leukocytes, NRBC per 100 WBC,
    # platelets apart; "ig" spelled out
    wbc = [c for c in classes if c not in ("erythroblast", "platelet")]
    n_wbc = sum(int(vc.get(c, 0)) for c in wbc)
    assert count["wbc"]["n"] == n_wbc and count["wbc"]["classes"] == wbc
    assert abs(sum(count["wbc"]["percent"].values()) - 100) < 0.05
    assert count["nrbc_per_100_wbc"] == round(100 * vc.get("erythroblast", 0) / n_wbc, 2)
    assert count["n_platelets"] == int(vc.get("platelet", 0))
    assert "immature granulocytes (ig)" in out and "per 100 WBC" in out
    assert count["unlike_training"]["n_scored"] == 16
    assert count["unlike_training"]["n"] == int((ok["unlike_training"].astype(str) == "True").sum())
    assert "are unlike the training images" in out + err
    # cells below the model's confidence threshold need review; a failed image does not
    from morphocell.model_io import load_model

    thr = load_model(model).metadata["review"]["threshold"]
    flag = (ok["needs_review"].astype(str) == "True").to_numpy()
    conf = P.max(axis=1)
    far = np.abs(conf - thr) > 1e-6             # the CSV rounds to 6 decimals
    assert (flag[far] == (conf[far] < thr)).all()
    assert str(df.iloc[-1]["needs_review"]) == "False"
    assert count["needs_review"]["n"] == int(flag.sum())
    assert count["needs_review"]["threshold"] == thr and "need review" in out
    marked = ok.loc[flag, "predicted"].value_counts()
    assert count["needs_review"]["by_class"] == {c: int(marked.get(c, 0)) for c in classes}
    ex = count["needs_review"]["excess"]   # more marked than on the training images?
    assert set(ex) == {"ratio", "p_value", "harder"}
    assert ("need review, against" in err) == ex["harder"]
    assert "review" in out.splitlines()[2]  # a column of the printed table
    # --review-threshold overrides it: 1 marks every classified cell, 0 none
    for thr2, n2 in ((1.0, 16), (0.0, 0)):
        main(["predict", str(model), *[p for p, _ in test_rows], str(bad),
              "--out", str(tmp_path / "p3.csv"), "--review-threshold", str(thr2), "-q"])
        c3 = json.loads((tmp_path / "p3_differential.json").read_text())
        assert c3["needs_review"]["n"] == n2
        assert c3["needs_review"]["source"] == "--review-threshold"
    capsys.readouterr()
    assert main(["predict", str(model), str(bad), "--review-threshold", "1.5"]) == EXIT_USER
    # a user-chosen atypical set
    rc = main(["predict", str(model), test_rows[0][0], "--out", str(tmp_path / "p2.csv"),
               "--atypical", "basophil", "-q"])
    d2 = pd.read_csv(tmp_path / "p2.csv")
    assert rc == EXIT_OK and np.isclose(d2["p_atypical"][0], d2["p_basophil"][0])
    capsys.readouterr()
    assert main(["predict", str(model), test_rows[0][0], "--atypical", "blast",
                 "--out", str(tmp_path / "p4.csv")]) == EXIT_USER
    err = capsys.readouterr().err
    assert "unknown atypical class blast" in err and "np.str_" not in err


def test_predict_blank_and_mistyped_inputs(trained, tmp_path, capsys):
    _, _, model, _, _ = trained
    good = pbc_subset(1, split="test")[0][0]
    blank = _blank(tmp_path / "blank.png")
    # a blank image: the same codes as segment and features (3 beside a good image, 2 alone)
    assert main(["predict", str(model), good, blank, "--out", str(tmp_path / "a.csv"),
                 "-q"]) == EXIT_PARTIAL
    capsys.readouterr()
    assert main(["predict", str(model), blank, "--out", str(tmp_path / "b.csv"),
                 "-q"]) == EXIT_USER
    assert "could not classify" in capsys.readouterr().err
    # the same image twice: one row each, counted once, said in one line
    assert main(["predict", str(model), good, good, "--out", str(tmp_path / "d.csv"),
                 "-q"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert "1 file repeats an image listed before" in err and "counted once" in err
    assert "(1 cell classified, 0 failed)" in out and len(pd.read_csv(tmp_path / "d.csv")) == 2
    # a mistyped folder: exit 2, one line, no differential printed, nothing written
    rc = main(["predict", str(model), str(tmp_path / "cellz"), "--out",
               str(tmp_path / "c.csv"), "-q"])
    out, err = capsys.readouterr()
    assert rc == EXIT_USER and out == "" and "no atypical class" not in out + err
    assert len(err.strip().splitlines()) == 1 and "cellz: " in err
    assert "not found" in err or "no such" in err
    assert err.count("cellz") == 1
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "c_differential.json").exists()


def test_models_without_a_review_threshold_get_no_review_column(trained, tmp_path, capsys):
    """Models written before the review threshold existed predict as before."""
    from morphocell.model_io import load_model, save_model

    _, _, model, _, _ = trained
    m = load_model(model)
    del m.metadata["review"]
    old = tmp_path / "old.mcm"
    save_model(m, old)
    img = pbc_subset(1, split="test")[0][0]
    assert main(["predict", str(old), img, "--out", str(tmp_path / "p.csv"), "-q"]) == 0
    assert "needs_review" not in pd.read_csv(tmp_path / "p.csv").columns
    assert "needs_review" not in json.loads((tmp_path / "p_differential.json").read_text())
    assert "need review" not in capsys.readouterr().out
    # ... unless a threshold is given
    assert main(["predict", str(old), img, "--out", str(tmp_path / "q.csv"), "-q",
                 "--review-threshold", "1"]) == 0
    assert pd.read_csv(tmp_path / "q.csv")["needs_review"].tolist() == [True]


def test_evaluate_cli_json_and_files(trained, capsys, tmp_path):
    _, _, model, _, _ = trained
    test_rows = pbc_subset(3, split="test")
    man = _manifest(tmp_path / "test.csv", test_rows)
    rc = main(["evaluate", str(model), str(man), "--json", "--out", str(tmp_path / "rep"), "-q"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = json.loads(out)                       # stdout holds exactly one JSON object
    assert m["n_images"] == 24 and m["n_failed"] == 0
    pred = pd.read_csv(tmp_path / "rep" / "predictions.csv")
    acc = float((pred["predicted"] == pred["label"]).mean())
    assert m["accuracy"] == pytest.approx(acc)
    assert acc > 0.5                          # 5 training images per class; chance is 1/8
    assert set(m["per_class"]) == {lab for _, lab in test_rows}
    f1 = [r["f1"] for r in m["per_class"].values()]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert all(r["support"] == 3 for r in m["per_class"].values())
    assert all(0 <= r["roc_auc"] <= 1 for r in m["per_class"].values())
    cm = pd.read_csv(tmp_path / "rep" / "confusion_matrix.csv", index_col=0)
    assert cm.to_numpy().sum() == 24 and np.trace(cm.to_numpy()) == round(acc * 24)
    assert (tmp_path / "rep" / "confusion_matrix.png").stat().st_size > 1000
    assert set(m["base_learners"]) == {"rf", "svc", "xgb"}
    # the cells below the review threshold, and the accuracy on the others, match the table
    r = m["review"]
    flag = pred["needs_review"].astype(bool).to_numpy()
    right = (pred["predicted"] == pred["label"]).to_numpy()
    assert r["n_review"] == flag.sum() and r["review_fraction"] == pytest.approx(flag.mean())
    if (~flag).any():
        assert r["accepted_accuracy"] == pytest.approx(right[~flag].mean())
    curve = pd.read_csv(tmp_path / "rep" / "review_curve.csv")
    assert curve["threshold"].is_monotonic_decreasing
    assert curve["review_fraction"].is_monotonic_decreasing
    assert curve["review_fraction"].iloc[-1] == 0 and curve["n_accepted"].iloc[-1] == 24
    at = curve[curve["threshold"] >= r["threshold"] - 1e-6]
    if len(at):
        assert at["n_accepted"].iloc[-1] == (~flag).sum()
    assert (tmp_path / "rep" / "review_curve.png").stat().st_size > 1000
    assert "review_curve" not in m
    assert set(r["excess"]) == {"ratio", "p_value", "harder"}
    assert m["unlike_training"]["n_scored"] == 24
    assert m["unlike_training"]["n"] == pred["unlike_training"].astype(bool).sum()

    # only two classes in the data: --classes-present-only predicts only those two; no
    # scikit-learn warning leaks either way
    two = [r for r in test_rows if r[1] in ("lymphocyte", "neutrophil")]
    man2 = _manifest(tmp_path / "two.csv", two)
    rc = run("evaluate", model, man2, "-q")
    assert rc.returncode == 0 and "Warning" not in rc.stderr and "site-packages" not in rc.stderr
    assert "per-learner F1" in rc.stdout and "immature granulocytes (ig)" in rc.stdout
    rc = main(["evaluate", str(model), str(man2), "--json", "--classes-present-only", "-q",
               "--out", str(tmp_path / "rep2")])
    m2 = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(m2["labels"]) == {"lymphocyte", "neutrophil"}
    assert m2["classes_present_only"] and m2["n"] == 6
    pred2 = pd.read_csv(tmp_path / "rep2" / "predictions.csv")
    assert set(pred2["predicted"]) <= {"lymphocyte", "neutrophil"}
    assert m2["accuracy"] == pytest.approx((pred2["predicted"] == pred2["label"]).mean())
    # --out naming an existing file: a user error in one line, before any work
    (tmp_path / "taken").write_text("keep me")
    rc = main(["evaluate", str(model), str(man2), "--out", str(tmp_path / "taken"), "-q"])
    err = capsys.readouterr().err
    assert rc == EXIT_USER and len(err.strip().splitlines()) == 1 and "not a folder" in err
    assert (tmp_path / "taken").read_text() == "keep me"
    # every image failing: exit 2, no report
    gone = _manifest(tmp_path / "gone.csv", [(str(tmp_path / "x.jpg"), "ig")] * 2)
    assert main(["evaluate", str(model), str(gone), "--out", str(tmp_path / "rep3"),
                 "-q"]) == EXIT_USER
    assert not (tmp_path / "rep3").exists()


def test_evaluate_warns_on_an_empty_class_folder(trained, tmp_path, capsys):
    _, _, model, _, _ = trained
    root = tmp_path / "test"
    for p, lab in pbc_subset(1, split="test"):
        (root / lab).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / lab)
    (root / "neutrophil" / "more").mkdir()  # a class is one level deep: ignored, said
    (root / "blast").mkdir()
    rc = main(["evaluate", str(model), str(root), "-q", "--json"])
    out, err = capsys.readouterr()
    assert rc == EXIT_OK and json.loads(out)["n"] == 8
    assert "1 class folder without images" in err and "blast" in err
    assert "ignored 1 folder" in err and "more" in err


def test_predict_review_writes_the_page(trained, tmp_path, capsys):
    """`predict --review DIR` on the bundled sample: the page of the predictions just
    written, one cell per row, the model named in its header; a listed image that does not
    exist is a placeholder on the page (exit 3)."""
    from morphocell.datasets import sample_paths

    _, _, model, _, _ = trained
    paths = sample_paths()[::8]
    out_csv, page = tmp_path / "pred.csv", tmp_path / "review"
    rc = main(["predict", str(model), *paths, "--out", str(out_csv), "--review", str(page),
               "-q"])
    out = capsys.readouterr().out
    assert rc == EXIT_OK and "review page of 10 cells" in out
    df = pd.read_csv(out_csv, keep_default_na=False)
    text = (page / "data.js").read_text(encoding="ascii")
    data = json.loads(text[text.index("{"):].rstrip().rstrip(";"))
    assert [c["p"] for c in data["cells"]] == df["path"].tolist() == paths
    assert data["model"]["name"] == model.name
    assert (page / "index.html").is_file()
    gone = str(tmp_path / "gone.png")
    rc = main(["predict", str(model), *paths[:2], gone, "--out", str(out_csv), "--review",
               str(page), "-q"])
    err = capsys.readouterr().err
    assert rc == EXIT_PARTIAL and f"{gone}: image file no longer exists" in err


def _segwbc_manifest(path, n):
    folder = DATA / "segwbc" / "dataset1"
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return _manifest(path, [(str(folder / f"{r['image_id']}_image.png"), r["label"].strip())
                            for r in rows])


def test_predict_and_evaluate_adapt_to_the_batch(data_dir, tmp_path, capsys, monkeypatch):
    """--adapt with the shipped model on 25 real cells of another lab (segwbc dataset1):
    the model is adapted to those images without their labels, nothing is written but the
    usual outputs, and its probabilities differ from the unadapted model's."""
    import morphocell.adapt

    man = _segwbc_manifest(tmp_path / "d1.csv", 25)
    cache = ["--cache-dir", str(tmp_path / "cache")]
    seen = []
    real = morphocell.adapt.adapt

    def spy(model, paths, labels=None, **kw):
        seen.append(labels)
        return real(model, paths, labels, **kw)

    monkeypatch.setattr(morphocell.adapt, "adapt", spy)
    rc = main(["evaluate", "default", str(man), "--adapt", "--classes-present-only", "--json",
               "-q", *cache])
    out, err = capsys.readouterr()
    assert rc == EXIT_OK and seen == [None]          # the labels only score the adaptation
    m = json.loads(out)
    assert m["n"] == 25 and 0 <= m["accuracy"] <= 1
    assert "adapted the model to these 25 images" in err
    before = {p.name for p in tmp_path.iterdir()}
    for flag in ([], ["--adapt"]):
        rc = main(["predict", "default", str(man), "--out",
                   str(tmp_path / f"p{len(flag)}.csv"), "-q", *cache, *flag])
        assert rc == EXIT_OK
    assert {p.name for p in tmp_path.iterdir()} - before == {
        "p0.csv", "p0_differential.json", "p1.csv", "p1_differential.json"}
    p0, p1 = (pd.read_csv(tmp_path / f"p{k}.csv") for k in (0, 1))
    cols = [c for c in p0.columns if c.startswith("p_") and c != "p_atypical"]
    assert list(p0["path"]) == list(p1["path"])
    assert not np.allclose(p0[cols].to_numpy(), p1[cols].to_numpy(), atol=1e-4)
    assert "adapted the model to these 25 images" in capsys.readouterr().out


def test_adapt_option_user_errors(trained, tmp_path, capsys):
    """A model without per-lab statistics, or too few images: exit 2, one line."""
    _, _, model, _, _ = trained
    few = [p for p, _ in pbc_subset(1, split="test")]
    rc = main(["predict", str(model), *few, "--adapt", "-q", "--out",
               str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == EXIT_USER and "cannot be adapted" in err and len(err.splitlines()) == 1
    rc = main(["predict", "default", *few, "--adapt", "-q", "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert rc == EXIT_USER and "at least 20" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.csv").exists()


def test_bad_model_files_exit_2_without_traceback(tmp_path, capsys):
    from morphocell.datasets import sample_paths

    img = sample_paths()[0]
    missing = tmp_path / "nope.mcm"
    assert main(["predict", str(missing), img, "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert "model file not found" in err and "nope.mcm" in err and "Traceback" not in err
    corrupt = tmp_path / "corrupt.mcm"
    corrupt.write_bytes(np.random.default_rng(0).bytes(5000))
    assert main(["evaluate", str(corrupt), img]) == 2
    err = capsys.readouterr().err
    assert "not a morphocell model file" in err and "Traceback" not in err
    pkl = tmp_path / "model.pkl"
    pkl.write_bytes(pickle.dumps({"a": 1}))
    assert main(["predict", str(pkl), img, "--out", str(tmp_path / "p.csv")]) == 2
    assert "pickle/joblib files are refused" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("features", ["deep", "fused"])
def test_train_cli_deep_with_cnn_options(features, data_dir, tmp_path, capsys):
    """`morphocell train --features deep|fused` end to end, with the CNN crop and augmentation
    options recorded in the model, and `predict` with the domain check (tiny: 3 classes x 6
    images, 2 folds, 1 epoch)."""
    pytest.importorskip("tensorflow")
    from morphocell.model_io import load_model

    rows = [r for r in pbc_subset(6) if r[1] in ("lymphocyte", "neutrophil", "platelet")]
    man = _manifest(tmp_path / "train.csv", rows)
    model = tmp_path / "deep.mcm"
    cache = str(tmp_path / "cache")
    rc = main(["train", str(man), "--out", str(model), "--features", features, "--cv", "2",
               "--epochs", "1", "--cnn-crop", "0.8", "--cnn-augment", "stain", "-q",
               "--cache-dir", cache])
    out, err = capsys.readouterr()
    assert rc == 0, err
    m = load_model(model)
    assert m.metadata["cnn_crop"] == 0.8 and m.metadata["cnn_augment"] == "stain"
    if features == "fused":  # domain copies by default (0.35): round(0.35 x 6) = 2 images
        # per class copied; the copies train the hand-crafted learners, the meta-learner is
        # fitted on the 18 images only
        assert m.metadata["domain_copies"] == 0.35 and m.metadata["n_domain_copies"] == 6
        assert m.estimator.n_domain_copies_ == 6
        assert len(list((tmp_path / "cache" / "domain_copies").glob("*.jpg"))) == 6
        assert "also trained on 6 domain-randomised copies" in out
    else:  # a deep model has no hand-crafted learner to train on copies
        assert m.metadata["domain_copies"] == 0 and m.metadata["n_domain_copies"] == 0
    assert m.metadata["n_used"] == 18 and m.classes == ["lymphocyte", "neutrophil", "platelet"]
    assert m.metadata["class_counts"] == {c: 6 for c in m.classes}
    deep = getattr(m.estimator, "deep_", m.estimator)
    assert all(e.augment == "stain" for e in deep.embedders_)
    ref = m.metadata["domain_reference"]
    assert ref["classes"] == m.classes and np.isfinite(ref["threshold"])
    assert m.metadata["review"]["n"] == 18
    # predict: the hand-crafted features come from the cache filled by training
    test = [p for p, _ in pbc_subset(1, split="test")][:3] + [str(tmp_path / "missing.jpg")]
    rc = main(["predict", str(model), *test, "--out", str(tmp_path / "p.csv"),
               "--cache-dir", cache])
    out, err = capsys.readouterr()
    assert rc == EXIT_PARTIAL and "missing.jpg" in err
    df = pd.read_csv(tmp_path / "p.csv")
    assert list(df["status"]) == ["ok", "ok", "ok", "error"]
    assert df.loc[:2, ["p_lymphocyte", "p_neutrophil", "p_platelet"]].notna().all().all()
    assert df["domain_score"][:3].notna().all() and np.isnan(df["domain_score"][3])
    assert "needs_review" in df.columns and not df["needs_review"][3]
    assert "unlike the training images" in out + err
    np.testing.assert_allclose(df.loc[:2, ["p_lymphocyte", "p_neutrophil", "p_platelet"]],
                               m.predict_proba(test[:3]), rtol=0, atol=1e-6)
    with pytest.raises(SystemExit) as exc:  # argparse: usage error, exit status 2
        main(["train", str(man), "--out", str(model), "--features", "deep",
              "--cnn-augment", "strong"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_demo_end_to_end(tmp_path):
    """The README's first command: the whole job on the bundled sample, as a subprocess."""
    from morphocell.datasets import sample_paths
    from morphocell.model_io import load_model

    out = tmp_path / "demo"
    r = run("demo", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "cross-validated" in r.stdout
    n = len(sample_paths())
    assert len(list((out / "overlays").glob("*_mask.png"))) == n
    assert len(list((out / "overlays").glob("*_overlay.png"))) == n
    pred = pd.read_csv(out / "predictions.csv")
    assert len(pred) == n and pred["predicted"].notna().all()
    count = json.loads((out / "differential.json").read_text())
    assert count["n_classified"] == n and sum(count["counts"].values()) == n
    assert abs(sum(count["percent"].values()) - 100) < 0.5
    assert set(count["flagged"]) <= {"erythroblast", "ig"} == set(count["atypical_classes"])
    model = load_model(out / "model.mcm")
    assert len(model.classes) == 8
    # the same model a `train` of the sample makes (the library's train(), no copies)
    assert model.metadata["features"] == "handcrafted" and model.metadata["domain_copies"] == 0
    assert model.metadata["review"]["n"] == n and "review threshold" in r.stdout
    assert model.metadata["domain_reference"]["classes"] == model.classes
    # in-sample predictions equal the model's own probabilities of the sample files
    P = model.predict_proba(sample_paths()[:5])
    np.testing.assert_allclose(pred[[f"p_{c}" for c in model.classes]].to_numpy()[:5], P,
                               atol=1e-6)
    assert not list(out.rglob(".*tmp"))  # nothing half-written


def test_demo_with_the_default_model(tmp_path):
    """`demo --model default` scores the shipped model on the bundled sample, no training."""
    from morphocell.datasets import sample_paths

    out = tmp_path / "demo"
    r = run("demo", "--model", "default", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "in-sample" in r.stdout
    assert not (out / "model.mcm").exists()  # nothing trained
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["n_images"] == len(sample_paths()) and metrics["n_failed"] == 0
    count = json.loads((out / "differential.json").read_text())
    assert count["n_classified"] == len(sample_paths())
