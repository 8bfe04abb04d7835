"""Config and command-line values as users mean them.

MONAI's command line passes lower-case words through as text (``--resume false`` is the string ``'false'``, which is
truthy) and ``null`` as the string ``'null'``: every boolean and optional key of the configs goes through these."""

from __future__ import annotations

from typing import Any

from ..errors import input_error

__all__ = ["flag", "optional", "check_choice"]

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0", ""}
_NULL = {"null", "none", "~", ""}


def flag(value: Any, name: str) -> bool:
    """A boolean config value as the user meant it: ``True``/``False``, ``1``/``0`` and the words ``true``,
    ``false``, ``yes``, ``no``, ``on``, ``off`` in any case; anything else is refused with a clear message."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise input_error(f"config: {name}", f"got {value!r}, which is not a yes/no value",
                      f"give --{name} true or --{name} false")


def optional(value: Any) -> Any:
    """``None`` for ``null``/``None``/``none`` given as text on the command line; any other value unchanged."""
    if isinstance(value, str) and value.strip().lower() in _NULL:
        return None
    return value


def check_choice(value: Any, choices, name: str) -> Any:
    """``value`` if it is one of ``choices``, else an error naming the config key and the choices."""
    if value not in list(choices):
        raise input_error(f"config: {name}", f"got {value!r}", f"use one of {list(choices)}")
    return value
