"""The exit codes of every ``morphocell`` sub-command, and the one place errors become codes.

======  ====================================================================================
code    meaning
======  ====================================================================================
0       success: every input gave a result
3       some inputs gave no result (unreadable, no cell found); the good results were
        written and the failures listed on stderr, one line each
2       user error: a bad argument or option, a missing or unusable input (a mistyped folder,
        a folder or manifest without images, no input that gave a result), an unreadable or
        tampered model file, an output path that cannot be written (an existing file where a
        folder is needed, a folder another run is writing to); one line on stderr
1       internal error (a bug): one line on stderr; ``--debug`` shows the traceback
130     interrupted (Ctrl-C)
======  ====================================================================================

Every sub-command returns :func:`outcome` of its inputs, and raises
:class:`~morphocell.errors.MorphocellError` for user errors; :func:`run` maps what is raised.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from ..errors import DataError, MorphocellError

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: Operating-system errors that a user causes with an output path (a file where a folder is
#: needed, a folder without write permission): exit 2, not an internal error.
_USER_OS_ERRORS = (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def outcome(n_good: int, failures: Sequence, verb: str = "use") -> int:
    """The exit code of a command over its inputs: 0 when nothing failed, 3 when some
    failed and others gave a result.

    Raises
    ------
    DataError
        No input gave a result (exit 2): ``"could not <verb> <path>: <reason>"`` for one
        input, else the count and the first failure.
    """
    if not failures:
        return EXIT_OK
    if n_good > 0:
        return EXIT_PARTIAL
    if len(failures) == 1:
        raise DataError(f"could not {verb} {failure_text(*failures[0])}")
    raise DataError(f"could not {verb} any of the {len(failures)} images (first: "
                    f"{failure_text(*failures[0])})")


def failure_text(path: str, status: str, error: str = "") -> str:
    """``"<path>: <reason>"`` of one failed input, the path written once."""
    reason = error or ("no cell found" if status == "no_cell" else status)
    return reason if str(path) in reason else f"{path}: {reason}"


def print_failures(failures: Sequence, command: str, limit: int = 20) -> None:
    """One stderr line per failed input (``limit`` at most, then a count)."""
    for f in failures[:limit]:
        print(f"morphocell {command}: skipped {failure_text(*f)}", file=sys.stderr)
    if len(failures) > limit:
        print(f"morphocell {command}: ... and {len(failures) - limit} more failed inputs",
              file=sys.stderr)


def run(func: Callable, args, command: str, debug: bool = False) -> int:
    """Call ``func(args)`` and turn what it raises into an exit code and one stderr line."""
    try:
        return int(func(args) or 0)
    except MorphocellError as exc:
        if debug:
            raise
        print(f"morphocell {command}: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except _USER_OS_ERRORS as exc:
        if debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"morphocell {command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `morphocell ... | head`: the reader went away
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if debug:
            raise
        print(f"morphocell {command}: internal error: {type(exc).__name__}: {exc} (run again "
              "with --debug for the traceback, and report it)", file=sys.stderr)
        return EXIT_INTERNAL
