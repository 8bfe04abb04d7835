"""One error type for everything a user can get wrong, with a message that names the place and the fix."""

from __future__ import annotations

__all__ = ["LECLInputError", "input_error", "find_input_error"]


class LECLInputError(ValueError):
    """Bad user input (file, CSV row, datalist field, config value).

    The message always says *where* (file, and row/line/field when there is one), *what* is wrong and *how to fix it*,
    so a user never has to read a traceback to act on it.
    """

    def __init__(self, where: str, problem: str, fix: str):
        self.where, self.problem, self.fix = str(where), problem, fix
        super().__init__(f"{where}: {problem}\n  Fix: {fix}")


def input_error(where, problem: str, fix: str) -> LECLInputError:
    """Build (not raise) a :class:`LECLInputError`; ``raise input_error(...)`` reads well at call sites."""
    return LECLInputError(str(where), problem, fix)


def find_input_error(exc: BaseException | None) -> LECLInputError | None:
    """The :class:`LECLInputError` behind ``exc``, if any (MONAI's ``Compose`` wraps transform errors in
    ``RuntimeError("applying transform ...")``; the user needs the original message)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, LECLInputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
