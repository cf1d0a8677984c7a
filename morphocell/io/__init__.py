"""Reading inputs: :mod:`.read` decodes and validates one image (RGB ``uint8`` or a clear
:class:`~morphocell.errors.ImageReadError`); :mod:`.listing` is the one lister of files,
folders, class subfolders and manifests."""
from __future__ import annotations

from .listing import (DERIVED_MARKER, DERIVED_SUFFIXES, LAYOUTS, Listing, ListingReport,
                      derived_pnginfo, is_derived, iter_chunks, iter_entries,
                      list_entries, load_folder, load_manifest, resolve_inputs)
from .read import (IMAGE_EXTENSIONS, MAX_FILE_BYTES, MAX_PIXELS, MIN_SIDE, read_image,
                   validate_image)

__all__ = [
    "DERIVED_MARKER",
    "DERIVED_SUFFIXES",
    "IMAGE_EXTENSIONS",
    "LAYOUTS",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "iter_chunks",
    "Listing",
    "ListingReport",
    "derived_pnginfo",
    "is_derived",
    "iter_entries",
    "list_entries",
    "load_folder",
    "load_manifest",
    "read_image",
    "resolve_inputs",
    "validate_image",
]
