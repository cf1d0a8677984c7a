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
:class:`~morphocell.errors.ModelFileError` at the first failure: the file exists, is a regular
file of at most :data:`MAX_FILE_BYTES` and a ZIP container (a pickle / joblib file is refused
without being unpickled); its members' declared sizes are within :data:`MAX_HEADER_BYTES` /
:data:`MAX_PAYLOAD_BYTES` and :data:`MAX_COMPRESSION_RATIO` (a ZIP bomb is refused before
anything is inflated); the header parses and has a supported format version and a compatible,
parsable morphocell version; the checksum matches (accidental corruption); every type the
payload would build is in :data:`TRUSTED_TYPES` (checked with
:func:`skops.io.get_untrusted_types` *before* anything is built). Only then is the payload
loaded, with exactly those types trusted, and the header is checked against what was built
(:func:`check_header`): the classes are the estimator's ``classes_`` in order, the feature
names are the estimator's, the atypical classes are classes of the model, the review
threshold lies in (0, 1], the out-of-distribution reference names features and classes of
the model with arrays of matching shapes.

The checksum detects corruption, not an attacker (who can recompute it); protection against
a malicious file comes from the allow-list (no pickle is ever loaded and no type outside the
list is ever instantiated) and from binding the header to the payload (a header edited to
relabel the classes, or to point at classes the model does not have, is refused).

Format versions: 2 (this version) and 1 (morphocell 0.1 files), loaded through
:data:`RENAMED_TYPES`, which maps classes whose module was renamed
(``morphocell.deep.fusion`` -> ``morphocell.deep.crossfit``) to their current names.

The name ``"default"`` (:func:`resolve_model`) is the model shipped in
``morphocell/models/default.mcm``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
import stat
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .errors import ModelFileError

__all__ = [
    "DEFAULT_MODEL",
    "FORMAT",
    "FORMAT_VERSION",
    "RENAMED_TYPES",
    "TRUSTED_TYPES",
    "SavedModel",
    "check_header",
    "default_atypical_classes",
    "load_model",
    "read_header",
    "register_trusted_types",
    "resolve_model",
    "save_model",
]

FORMAT = "morphocell-model"
#: Version of the container written; 1 is still read (:data:`RENAMED_TYPES`).
FORMAT_VERSION = 2
_HEADER, _PAYLOAD, _CHECKSUM = "header.json", "model.skops", "checksum.sha256"
#: Largest header accepted: class and feature names plus metadata are a few hundred kB at most.
MAX_HEADER_BYTES = 1 << 20
#: Largest payload accepted (a fused model with its networks is well below).
MAX_PAYLOAD_BYTES = 2 << 30
#: Largest model file accepted (checked with ``stat`` before it is opened).
MAX_FILE_BYTES = MAX_PAYLOAD_BYTES + MAX_HEADER_BYTES + (1 << 20)
#: Largest ratio of inflated to stored size of a member (morphocell stores members
#: uncompressed, ratio 1; a ZIP bomb inflates a thousandfold and more).
MAX_COMPRESSION_RATIO = 50
#: The model name that means the shipped model (:func:`resolve_model`).
DEFAULT_MODEL = "default"
_MODELS_DIR = Path(__file__).resolve().parent / "models"
_VERSION_RE = re.compile(r"^\d+(\.\d+){1,2}((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?"
                         r"(\+[A-Za-z0-9]+(\.[A-Za-z0-9]+)*)?$")

#: Classes that moved module since format version 1: ``old name -> current name``. A
#: version-1 payload is rewritten through this table before its types are checked.
RENAMED_TYPES: dict[str, str] = {
    "morphocell.deep.fusion.DeepModel": "morphocell.deep.crossfit.DeepModel",
    "morphocell.deep.fusion.FusedModel": "morphocell.deep.crossfit.FusedModel",
}

#: Types a model payload may contain beyond skops' defaults (builtins, numpy arrays and
#: scikit-learn estimators). Every entry is a class whose reconstruction only sets attributes
#: (no code runs from the file). Extend with :func:`register_trusted_types`.
TRUSTED_TYPES: set[str] = {
    "morphocell.ensembles.stacking.StackedCellClassifier",
    "morphocell.ensembles.stacking.BaseLearner",
    "morphocell.features.extractor.FeatureExtractor",
    "morphocell.ensembles.lab_adaptive.LabAdaptiveClassifier",
    "morphocell.adapt.LabAdaptiveClassifier",  # its former module (the shipped default model)
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
        safely later), has no ``classes_``, or the header would not describe it
        (:func:`check_header`: it could not be loaded later).
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
    if len(hbytes) > MAX_HEADER_BYTES:
        raise ModelFileError(f"cannot save: the header would be {len(hbytes)} bytes (the "
                             f"limit is {MAX_HEADER_BYTES}); store less metadata", path)
    check_header(json.loads(hbytes), model.estimator, path)  # what load_model will check
    checksum = hashlib.sha256(hbytes + payload).hexdigest()
    path = Path(path)
    with (atomic_write(path, "wb") as fh,
          zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as z):
        z.writestr(_HEADER, hbytes)
        z.writestr(_PAYLOAD, payload)
        z.writestr(_CHECKSUM, checksum + "\n")
    return path


def resolve_model(name: str | os.PathLike) -> Path:
    """The file a model argument names: ``"default"`` is the model shipped with morphocell
    (``morphocell/models/default.mcm``); anything else is a path (``./default`` for a file
    of that name in the working folder).

    Raises
    ------
    ModelFileError
        ``"default"`` when the shipped model is not installed.
    """
    if isinstance(name, str) and name == DEFAULT_MODEL:
        path = _MODELS_DIR / "default.mcm"
        if not path.is_file():
            raise ModelFileError(
                f"the default model is not installed (expected {path}); reinstall morphocell "
                "or give a model file trained with 'morphocell train'", DEFAULT_MODEL)
        return path
    return Path(name)


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in str(v).split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out)


def _read_member(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, path: Path) -> bytes:
    """One member, refused from its declared sizes before anything is inflated, and read
    with a bound (a member whose data inflates past its declared size is refused too)."""
    if info.file_size > limit:
        raise ModelFileError(f"member {info.filename} is implausibly large ({info.file_size} "
                             f"bytes; the limit is {limit})", path)
    if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1) + 4096:
        raise ModelFileError(f"member {info.filename} inflates {info.file_size} bytes from "
                             f"{info.compress_size} (a ZIP bomb?)", path)
    with z.open(info) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ModelFileError(f"member {info.filename} is implausibly large", path)
    return data


def _read_members(path: Path) -> tuple[bytes, bytes, str]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelFileError("model file not found", path) from None
    except OSError as exc:
        raise ModelFileError(f"model file could not be read ({exc.strerror or exc})",
                             path) from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFileError("is a directory, not a model file", path)
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError("not a regular file (a FIFO or device), not a model file", path)
    if st.st_size == 0:
        raise ModelFileError("empty model file (0 bytes)", path)
    if st.st_size > MAX_FILE_BYTES:
        raise ModelFileError(f"model file too large ({st.st_size} bytes; the limit is "
                             f"{MAX_FILE_BYTES})", path)
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
            hbytes = _read_member(z, infos[_HEADER], MAX_HEADER_BYTES, path)
            checksum = _read_member(z, infos[_CHECKSUM], 1024, path)
            payload = _read_member(z, infos[_PAYLOAD], MAX_PAYLOAD_BYTES, path)
            return hbytes, payload, checksum.decode("ascii").strip()
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, EOFError,
            NotImplementedError) as exc:
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
    written = header.get("morphocell_version")
    if not isinstance(written, str) or not _VERSION_RE.match(written):
        raise ModelFileError(f"model header has an unparsable morphocell version {written!r}",
                             path)
    mine, theirs = _version_tuple(__version__), _version_tuple(written)
    if theirs[:1] != mine[:1] or theirs[:2] > mine[:2]:
        raise ModelFileError(
            f"model written by morphocell {written} cannot be loaded by morphocell "
            f"{__version__}; use a matching version or retrain the model", path)
    for key in ("classes", "feature_names", "atypical_classes", "metadata", "payload_sha256"):
        if key not in header:
            raise ModelFileError(f"model header lacks {key!r}", path)
    for key in ("classes", "feature_names", "atypical_classes"):
        v = header[key]
        if not isinstance(v, list) or not all(isinstance(c, str) for c in v):
            raise ModelFileError(f"model header {key!r} is not a list of names", path)
    if not isinstance(header["metadata"], dict):
        raise ModelFileError("model header 'metadata' is not a mapping", path)
    return header


def read_header(path: str | os.PathLike) -> dict:
    """The verified header of a model file (classes, metadata, ...) without loading the model.

    The checksum is verified; the header is checked against the payload only by
    :func:`load_model` (which builds it)."""
    path = resolve_model(path)
    hbytes, payload, checksum = _read_members(path)
    header = _parse_header(hbytes, path)
    _verify(hbytes, payload, checksum, header, path)
    return header


def _verify(hbytes, payload, checksum, header, path):
    if hashlib.sha256(hbytes + payload).hexdigest() != checksum:
        raise ModelFileError("checksum mismatch: the model file is corrupt or was modified", path)
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ModelFileError("payload checksum mismatch: the model file is corrupt", path)


def _rename_types(payload: bytes, path: Path) -> bytes:
    """A format-1 skops payload with the classes of :data:`RENAMED_TYPES` renamed."""
    def walk(node):
        if isinstance(node, dict):
            mod, cls = node.get("__module__"), node.get("__class__")
            if isinstance(mod, str) and isinstance(cls, str):
                new = RENAMED_TYPES.get(f"{mod}.{cls}")
                if new is not None:
                    node["__module__"], node["__class__"] = new.rsplit(".", 1)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    try:
        src = zipfile.ZipFile(io.BytesIO(payload))
        info = src.getinfo("schema.json")
        schema = json.loads(_read_member(src, info, MAX_HEADER_BYTES * 64, path))
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything malformed in the skops container
        raise ModelFileError(f"corrupt model payload ({type(exc).__name__}: {exc})",
                             path) from None
    walk(schema)
    out = io.BytesIO()
    with src, zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for i in src.infolist():
            data = (json.dumps(schema).encode() if i.filename == "schema.json"
                    else _read_member(src, i, MAX_PAYLOAD_BYTES, path))
            dst.writestr(i.filename, data)
    return out.getvalue()


def _names(x) -> list[str]:
    return [str(c) for c in x]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_header(header: dict, estimator, path: str | os.PathLike | None = None) -> None:
    """Check that a model header describes ``estimator``; :class:`ModelFileError` if not.

    The classes must be ``estimator.classes_`` in order and distinct, the feature names those
    of the estimator, the atypical classes classes of the model, ``metadata["review"]``'s
    threshold a number in (0, 1], and ``metadata["domain_reference"]`` (the
    :mod:`morphocell.novelty` reference) must name features of the model (or of
    :data:`morphocell.novelty.NOVELTY_FEATURES` for a model without hand-crafted columns) and
    classes of the model, with ``median`` / ``scale`` arrays of one row per class and one
    column per feature, positive scales and a finite threshold.
    """
    from .novelty import NOVELTY_FEATURES

    classes = header["classes"]
    est_classes = getattr(estimator, "classes_", None)
    if est_classes is None:
        raise ModelFileError("the stored estimator has no classes_ (not a fitted classifier)",
                             path)
    if _names(est_classes) != classes:
        raise ModelFileError(
            f"the header's classes {classes} are not the model's classes "
            f"{_names(est_classes)} (the header was edited or belongs to another model)", path)
    if len(set(classes)) != len(classes):
        raise ModelFileError(f"the header lists a class twice: {classes}", path)
    feats = _feature_names_of(estimator)
    if header["feature_names"] != feats:
        raise ModelFileError(
            f"the header's feature names ({len(header['feature_names'])}) are not the "
            f"model's ({len(feats)}): the header was edited or belongs to another model", path)
    unknown = [c for c in header["atypical_classes"] if c not in classes]
    if unknown:
        raise ModelFileError(f"atypical classes {unknown} are not classes of the model "
                             f"{classes}", path)
    meta = header["metadata"]
    review = meta.get("review")
    if review is not None:
        t = review.get("threshold") if isinstance(review, dict) else None
        # report.review_threshold: 0.0 accepts every cell, the float just above 1 reviews all
        if not _is_number(t) or not 0 <= t <= math.nextafter(1.0, 2.0):
            raise ModelFileError(f"review threshold {t!r} is not a number in [0, 1]", path)
    ref = meta.get("domain_reference")
    if ref is not None:
        _check_reference(ref, classes, feats or list(NOVELTY_FEATURES), path)


def _check_reference(ref, classes: list[str], known: list[str], path) -> None:
    def bad(why: str):
        return ModelFileError(f"out-of-distribution reference is inconsistent: {why}", path)

    if not isinstance(ref, dict):
        raise bad("not a mapping")
    feats, rclasses = ref.get("features"), ref.get("classes")
    if (not isinstance(feats, list) or not feats or not all(isinstance(f, str) for f in feats)
            or len(set(feats)) != len(feats)):
        raise bad("'features' is not a list of distinct names")
    missing = [f for f in feats if f not in known]
    if missing:
        raise bad(f"features {missing} are not features of the model")
    if not set(ref.get("log_features") or []) <= set(feats):
        raise bad("'log_features' names features outside 'features'")
    if (not isinstance(rclasses, list) or not rclasses
            or not all(isinstance(c, str) for c in rclasses) or not set(rclasses) <= set(classes)):
        raise bad(f"classes {rclasses!r} are not classes of the model")
    shape = (len(rclasses), len(feats))
    for key in ("median", "scale"):
        try:
            a = np.asarray(ref.get(key), dtype=np.float64)
        except (TypeError, ValueError):
            raise bad(f"{key!r} is not numeric") from None
        if a.shape != shape:
            raise bad(f"{key!r} has shape {a.shape}, expected {shape} (classes x features)")
        if np.isinf(a).any() or (key == "scale" and (a <= 0).any()):
            raise bad(f"{key!r} holds infinite{' or non-positive' if key == 'scale' else ''} "
                      "values")
    t = ref.get("threshold")
    if not _is_number(t) or not math.isfinite(t) or t < 0:
        raise bad(f"threshold {t!r} is not a finite number >= 0")


def load_model(path: str | os.PathLike) -> SavedModel:
    """Load a model file written by :func:`save_model`, never executing code from it.

    ``path`` may be ``"default"``: the model shipped with morphocell (:func:`resolve_model`).

    Raises
    ------
    ModelFileError
        Missing, not a model file (e.g. a pickle), oversized or a ZIP bomb, corrupt, checksum
        mismatch, incompatible version, a payload that would build a type outside
        :data:`TRUSTED_TYPES`, or a header that does not describe the payload
        (:func:`check_header`).
    """
    import skops.io as sio

    path = resolve_model(path)
    hbytes, payload, checksum = _read_members(path)
    header = _parse_header(hbytes, path)
    _verify(hbytes, payload, checksum, header, path)
    if header["format_version"] == 1:
        payload = _rename_types(payload, path)
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
    check_header(header, est, path)
    return SavedModel(est, header["classes"], header["feature_names"],
                      header["atypical_classes"], header["metadata"],
                      str(header.get("morphocell_version")))

