"""One error type for everything a user can get wrong, with a message that names the place and the fix."""

from __future__ import annotations

import os
import sys

__all__ = ["LECLInputError", "LECLRunError", "LECLInterrupted", "INTERRUPTED_EXIT_STATUS", "input_error",
           "find_input_error", "report_input_errors_briefly",
           "DEBUG_ENV"]

#: set this environment variable to 1 to see full tracebacks for input errors
DEBUG_ENV = "LECL_DEBUG"


class LECLInputError(ValueError):
    """Bad user input (file, CSV row, datalist field, config value).

    The message always says *where* (file, and row/line/field when there is one), *what* is wrong and *how to fix it*,
    so a user never has to read a traceback to act on it.
    """

    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = str(where), problem, fix
        super().__init__(f"{where}: {problem}\n  Fix: {fix}")


class LECLRunError(RuntimeError):
    """A run that finished what it could but not everything, for a reason that is not the user's input (a bug): the
    message names what failed and where the tracebacks were written."""


#: exit status of a run stopped by Ctrl-C (SIGINT) or SIGTERM, as shells report a process ended by SIGINT
INTERRUPTED_EXIT_STATUS = 130


class LECLInterrupted(SystemExit):
    """A run stopped on request (Ctrl-C, SIGTERM) after saving what it can resume from: ends the process with
    :data:`INTERRUPTED_EXIT_STATUS` and no traceback (the one-line message is printed before it is raised)."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(INTERRUPTED_EXIT_STATUS)


def input_error(where, problem: str, fix: str) -> LECLInputError:
    """Build (not raise) a :class:`LECLInputError`; ``raise input_error(...)`` reads well at call sites."""
    return LECLInputError(str(where), problem, fix)


def find_input_error(exc: BaseException | None) -> LECLInputError | None:
    """The :class:`LECLInputError` behind ``exc``, if any: ``exc`` itself or what it was raised *from* (MONAI's
    ``Compose`` wraps transform errors in ``RuntimeError("applying transform ...") from error``; the user needs the
    original message). Only explicit causes count: an error raised *while handling* an input error (its implicit
    ``__context__``) is a bug of its own, not that input error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, LECLInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None


def report_input_errors_briefly() -> None:
    """Make an uncaught error whose cause is a :class:`LECLInputError` print as its short where/problem/fix message,
    and a :class:`LECLRunError` as its summary (no traceback; the exit status stays 1); ``LECL_DEBUG=1`` keeps the
    traceback. Installed by the bundle configs, so ``python -m monai.bundle run ...`` reports input errors as the
    ``lecl`` command does. Idempotent."""
    previous = sys.excepthook
    if getattr(previous, "_lecl_brief", False):
        return

    def hook(exc_type, exc, tb):
        if isinstance(exc, KeyboardInterrupt) and os.environ.get(DEBUG_ENV, "") in ("", "0"):
            sys.stderr.write("interrupted (Ctrl-C) before anything could be saved to resume from; run the command "
                             f"again (set {DEBUG_ENV}=1 to see the traceback)\n")
            return
        cause = find_input_error(exc) or (exc if isinstance(exc, LECLRunError) else None)
        if cause is None or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            previous(exc_type, exc, tb)
            return
        sys.stderr.write(f"error: {cause}\n  (set {DEBUG_ENV}=1 to see the traceback)\n")
        sys.stderr.flush()

    hook._lecl_brief = True
    sys.excepthook = hook
