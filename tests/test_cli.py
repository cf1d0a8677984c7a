"""The command line as a user meets it: help everywhere, clear errors, no tracebacks."""
from __future__ import annotations

import subprocess
import sys

import pytest

from morphocell.cli import EXIT_USER, main

COMMANDS = ["segment", "crop", "features", "train", "predict", "evaluate", "demo", "train-segmenter"]


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "morphocell.cli", *args], capture_output=True,
                          text=True, **kw)


def test_top_level_help_lists_every_command():
    out = run("--help")
    assert out.returncode == 0
    for c in COMMANDS:
        assert c in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: morphocell " + command in capsys.readouterr().out


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
    assert out.returncode in (2, 3), out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_debug_shows_the_traceback(tmp_path):
    out = run("--debug", "train", "/nonexistent/folder", "--out", "m.mcm", cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_parser_is_importable_without_heavy_modules():
    code = ("import sys; from morphocell.cli import build_parser; build_parser(); "
            "print([m for m in ('tensorflow', 'dask', 'xgboost', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_demo_end_to_end(tmp_path):
    """The README's first command: the whole job on the bundled sample, as a subprocess."""
    import json

    import pandas as pd

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
    # what predict needs for needs_review / unlike_training, as for a model from train
    assert model.metadata["review"]["n"] == n and "review threshold" in r.stdout
    assert model.metadata["domain_reference"]["classes"] == model.classes
    assert not list(out.rglob(".*tmp"))  # nothing half-written
