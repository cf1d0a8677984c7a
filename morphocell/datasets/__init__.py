"""A tiny bundled sample (see ``ATTRIBUTION.md``) for demos, doctests and quick checks."""
from __future__ import annotations

from pathlib import Path

__all__ = ["sample_dir", "sample_paths", "sample_folder", "segwbc_sample"]

_HERE = Path(__file__).resolve().parent


def sample_folder() -> Path:
    """Folder of class subfolders with 10 PBC images per class (8 classes)."""
    return _HERE / "pbc_sample"


sample_dir = sample_folder


def sample_paths() -> list[str]:
    """Paths of the bundled PBC images, sorted by class then name."""
    from ..io import load_folder

    return load_folder(sample_folder())[0]


def segwbc_sample() -> list[tuple[str, str]]:
    """``(image_path, mask_path)`` pairs of the bundled expert-annotated images."""
    d = _HERE / "segwbc_sample"
    return [(str(p), str(p).replace("_image.png", "_mask.png"))
            for p in sorted(d.glob("*_image.png"))]
