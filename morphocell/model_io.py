"""Safe model files: loading never executes code from the file.

A morphocell model file (``.mcm``, any name works) is a ZIP container with three members:

``header.json``
    format name and version, morphocell version, class names, feature names, atypical
    classes, training metadata (data hash, date, CV scores, ...), and the SHA-256 of the
    payload.
``model.skops``
    the fitted estimator (usually ``Pipeline([("features", FeatureExtractor()),
    ("clf", StackedCellClassifier())])``) serialised with :mod:`skops.io`. skops stores a JSON
    description of the object tree plus numpy arrays; loading rebuilds only the types it is
    told to trust. XGBoost boosters are stored as XGBoost's own JSON model.
``checksum.sha256``
    :math:`\\mathrm{SHA256}(\\mathrm{header\\_bytes} \\,\\|\\, \\mathrm{payload\\_bytes})` in hex.

Loading (:func:`load_model`) checks, in this order, and raises
:class:`~morphocell.errors.ModelFileError` at the first failure: the file exists and is a ZIP
container (a pickle / joblib file is refused without being unpickled); the header parses and
has a supported format version and a compatible morphocell version; the checksum matches
(accidental corruption); every type the payload would build is in :data:`TRUSTED_TYPES`
(checked with :func:`skops.io.get_untrusted_types` *before* anything is built). Only then is
the payload loaded, with exactly those types trusted.

The checksum detects corruption, not an attacker (who can recompute it); protection against
a malicious file comes from the allow-list: no pickle is ever loaded and no type outside the
list is ever instantiated.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .errors import ModelFileError

__all__ = ["FORMAT", "FORMAT_VERSION", "TRUSTED_TYPES", "SavedModel", "save_model",
           "load_model", "read_header", "register_trusted_types", "default_atypical_classes"]

FORMAT = "morphocell-model"
FORMAT_VERSION = 1
_HEADER, _PAYLOAD, _CHECKSUM = "header.json", "model.skops", "checksum.sha256"
#: Largest member accepted when loading (protects against ZIP bombs).
MAX_MEMBER_BYTES = 4 << 30

#: Types a model payload may contain beyond skops' defaults (builtins, numpy arrays and
#: scikit-learn estimators). Every entry is a class whose reconstruction only sets attributes
#: (no code runs from the file). Extend with :func:`register_trusted_types`.
TRUSTED_TYPES: set[str] = {
    "morphocell.ensembles.stacking.StackedCellClassifier",
    "morphocell.ensembles.stacking.BaseLearner",
    "morphocell.features.extractor.FeatureExtractor",
    # morphocell.deep: the network is rebuilt from its .keras bytes with Keras safe_mode=True
    "morphocell.deep.crossfit.DeepModel",
    "morphocell.deep.crossfit.FusedModel",
    "morphocell.deep.embedder.CNNEmbedder",
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._TemperatureScaling",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.model_selection._split.KFold",
    "sklearn.model_selection._split.PredefinedSplit",  # fused stacks: the networks' folds
    "sklearn.tree._tree.Tree",
}


def register_trusted_types(names) -> None:
    """Add fully qualified type names (``"package.module.Class"``) to :data:`TRUSTED_TYPES`.

    For extensions (e.g. :mod:`morphocell.deep`) whose fitted objects go into model files.
    Only add classes whose state restoration runs no code taken from the file.
    """
    for n in names:
        if not isinstance(n, str) or n.count(".") < 1:
            raise ValueError(f"not a fully qualified type name: {n!r}")
        TRUSTED_TYPES.add(n)


def default_atypical_classes(classes) -> list[str]:
    """Classes that should not be in normal peripheral blood: ``ig``, ``erythroblast`` and any
    class whose name contains ``blast`` (case-insensitive)."""
    out = []
    for c in classes:
        s = str(c).lower()
        if s in ("ig", "erythroblast") or "blast" in s:
            out.append(str(c))
    return out


@dataclass
class SavedModel:
    """A fitted estimator with what is needed to use and audit it.

    Attributes
    ----------
    estimator : fitted estimator with ``predict_proba`` (usually a Pipeline on image paths)
    classes : list of str
    feature_names : list of str
    atypical_classes : list of str
        Classes summed into ``p_atypical``; set it, then :func:`save_model`, to change it.
    metadata : dict
        Training metadata (data hash, date, CV scores, ...).
    morphocell_version : str
        Version that wrote the file (this version for a model not loaded from a file).
    """

    estimator: Any
    classes: list[str]
    feature_names: list[str] = field(default_factory=list)
    atypical_classes: list[str] | None = None
    metadata: dict = field(default_factory=dict)
    morphocell_version: str = __version__

    def __post_init__(self):
        self.classes = [str(c) for c in self.classes]
        if self.atypical_classes is None:
            self.atypical_classes = default_atypical_classes(self.classes)

    def predict_proba(self, X) -> np.ndarray:
        return self.estimator.predict_proba(X)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, _dt.datetime)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _feature_names_of(est) -> list[str]:
    for obj in ([est] + ([s for _, s in est.steps] if hasattr(est, "steps") else [])):
        names = getattr(obj, "feature_names_in_", None)
        if names is not None:
            return [str(n) for n in names]
    try:
        return [str(n) for n in est[0].get_feature_names_out()]
    except Exception:  # noqa: BLE001 - not a pipeline / not fitted: no names to record
        return []


def _untrusted(payload: bytes) -> list[str]:
    import skops.io as sio

    return sorted(set(sio.get_untrusted_types(data=payload)))


def save_model(model, path: str | os.PathLike, *, metadata: dict | None = None,
               atypical_classes=None) -> Path:
    """Write ``model`` (a :class:`SavedModel` or a fitted estimator) to ``path`` atomically.

    Raises
    ------
    ModelFileError
        If the estimator holds a type outside :data:`TRUSTED_TYPES` (it could not be loaded
        safely later), or has no ``classes_``.
    """
    import skops.io as sio

    from ._utils import atomic_write

    if not isinstance(model, SavedModel):
        classes = getattr(model, "classes_", None)
        if classes is None:
            raise ModelFileError("the estimator to save is not a fitted classifier "
                                 "(no classes_)", path)
        model = SavedModel(model, list(classes), _feature_names_of(model),
                           atypical_classes, dict(metadata or {}))
    else:
        if metadata is not None:
            model.metadata = dict(metadata)
        if atypical_classes is not None:
            model.atypical_classes = [str(c) for c in atypical_classes]
    unknown = [c for c in model.atypical_classes if c not in model.classes]
    if unknown:
        raise ModelFileError(f"atypical classes {unknown} are not classes of the model "
                             f"{model.classes}", path)
    payload = sio.dumps(model.estimator)
    bad = [t for t in _untrusted(payload) if t not in TRUSTED_TYPES]
    if bad:
        raise ModelFileError(f"cannot save safely: types {bad} are not in the trusted list "
                             "(register them with morphocell.model_io.register_trusted_types)",
                             path)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "morphocell_version": __version__,
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": model.classes,
        "feature_names": list(model.feature_names),
        "atypical_classes": list(model.atypical_classes),
        "metadata": model.metadata,
        "payload": _PAYLOAD,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    hbytes = json.dumps(header, indent=1, sort_keys=True, default=_json_default).encode()
    checksum = hashlib.sha256(hbytes + payload).hexdigest()
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as z:
            z.writestr(_HEADER, hbytes)
            z.writestr(_PAYLOAD, payload)
            z.writestr(_CHECKSUM, checksum + "\n")
    return path


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in str(v).split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _read_members(path: Path) -> tuple[bytes, bytes, str]:
    if not path.exists():
        raise ModelFileError("model file not found", path)
    if path.is_dir():
        raise ModelFileError("is a directory, not a model file", path)
    if path.stat().st_size == 0:
        raise ModelFileError("empty model file (0 bytes)", path)
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            "not a morphocell model file (expected the ZIP container written by "
            "'morphocell train'; pickle/joblib files are refused because loading them can "
            "execute code)", path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
            missing = [m for m in (_HEADER, _PAYLOAD, _CHECKSUM) if m not in infos]
            if missing:
                raise ModelFileError(f"not a morphocell model file (missing {missing})", path)
            for m in (_HEADER, _PAYLOAD, _CHECKSUM):
                if infos[m].file_size > MAX_MEMBER_BYTES:
                    raise ModelFileError(f"member {m} is implausibly large", path)
            return z.read(_HEADER), z.read(_PAYLOAD), z.read(_CHECKSUM).decode("ascii").strip()
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, EOFError) as exc:
        raise ModelFileError(f"corrupt model file ({exc})", path) from None


def _parse_header(hbytes: bytes, path: Path) -> dict:
    try:
        header = json.loads(hbytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"corrupt model header ({exc})", path) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError("not a morphocell model file (wrong format tag)", path)
    fv = header.get("format_version")
    if not isinstance(fv, int) or fv > FORMAT_VERSION or fv < 1:
        raise ModelFileError(
            f"model file format version {fv!r} is not supported by morphocell {__version__} "
            f"(supports 1..{FORMAT_VERSION}); upgrade morphocell or retrain the model", path)
    written = str(header.get("morphocell_version", "0"))
    mine, theirs = _version_tuple(__version__), _version_tuple(written)
    if theirs[:1] != mine[:1] or theirs[:2] > mine[:2]:
        raise ModelFileError(
            f"model written by morphocell {written} cannot be loaded by morphocell "
            f"{__version__}; use a matching version or retrain the model", path)
    for key in ("classes", "feature_names", "atypical_classes", "metadata", "payload_sha256"):
        if key not in header:
            raise ModelFileError(f"model header lacks {key!r}", path)
    return header


def read_header(path: str | os.PathLike) -> dict:
    """The verified header of a model file (classes, metadata, ...) without loading the model."""
    path = Path(path)
    hbytes, payload, checksum = _read_members(path)
    header = _parse_header(hbytes, path)
    _verify(hbytes, payload, checksum, header, path)
    return header


def _verify(hbytes, payload, checksum, header, path):
    if hashlib.sha256(hbytes + payload).hexdigest() != checksum:
        raise ModelFileError("checksum mismatch: the model file is corrupt or was modified", path)
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ModelFileError("payload checksum mismatch: the model file is corrupt", path)


def load_model(path: str | os.PathLike) -> SavedModel:
    """Load a model file written by :func:`save_model`, never executing code from it.

    Raises
    ------
    ModelFileError
        Missing, not a model file (e.g. a pickle), corrupt, checksum mismatch, incompatible
        version, or a payload that would build a type outside :data:`TRUSTED_TYPES`.
    """
    import skops.io as sio

    path = Path(path)
    hbytes, payload, checksum = _read_members(path)
    header = _parse_header(hbytes, path)
    _verify(hbytes, payload, checksum, header, path)
    try:
        types = _untrusted(payload)
    except Exception as exc:  # noqa: BLE001 - anything malformed in the skops schema
        raise ModelFileError(f"corrupt model payload ({type(exc).__name__}: {exc})",
                             path) from None
    bad = [t for t in types if t not in TRUSTED_TYPES]
    if bad:
        raise ModelFileError(f"refused: the model would build untrusted types {bad}", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            est = sio.loads(payload, trusted=types)
    except Exception as exc:  # noqa: BLE001 - a payload that does not rebuild
        raise ModelFileError(f"model payload could not be rebuilt ({type(exc).__name__}: "
                             f"{exc})", path) from None
    if not hasattr(est, "predict_proba"):
        raise ModelFileError("the stored object is not a classifier (no predict_proba)", path)
    return SavedModel(est, header["classes"], header["feature_names"],
                      header["atypical_classes"], header["metadata"],
                      str(header.get("morphocell_version")))

