"""Config and command-line values as users mean them.

MONAI's command line passes lower-case words through as text (``--resume false`` is the string ``'false'``, which is
truthy) and ``null`` as the string ``'null'``: every boolean and optional key of the configs goes through these."""

from __future__ import annotations

import math
from typing import Any

from ..errors import input_error

__all__ = ["flag", "optional", "check_choice", "ARGMAX", "check_np_threshold", "check_min_instance_size",
           "check_min_volume_um3", "POSTPROCESS_VALUE_CHECKS"]

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


# -- post-processing values: one check per key, used wherever a value enters (config, command line, a model's
# -- stored calibration, a calibration grid, the link step), each caller naming its own "where" ------------------------
#: the ``np_threshold`` that means "no threshold: the argmax of the nucleus branch" (MONAI's rule, 0.5)
ARGMAX = "argmax"


def _number(value: Any) -> float:
    """``value`` as a float; NaN (refused by every check) for anything that is not a real number (bools too)."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def check_np_threshold(value: Any, where: str, or_else: str = "", argmax: bool = False) -> float | None:
    """A nucleus-probability threshold in (0, 1); with ``argmax``, the word ``"argmax"`` gives ``None`` (no
    threshold: the nucleus branch's argmax). ``or_else``: what else the caller accepts, for the fix (e.g. "or null
    for the model's calibrated value")."""
    if argmax and isinstance(value, str) and value.strip().lower() == ARGMAX:
        return None
    number = _number(value)
    if not 0.0 < number < 1.0:
        also = f", '{ARGMAX}'" if argmax else ""
        raise input_error(where, f"got {value!r}", f"give a probability between 0 and 1 (e.g. 0.7){also}"
                          + (f", {or_else}" if or_else else ""))
    return number


def check_min_instance_size(value: Any, where: str, or_else: str = "") -> int:
    """A per-slice instance size: a whole number of pixels >= 0."""
    number = _number(value)
    if not (math.isfinite(number) and number >= 0 and number == int(number)):
        raise input_error(where, f"got {value!r}", "give a whole number of pixels >= 0"
                          + (f", {or_else}" if or_else else ""))
    return int(number)


def check_min_volume_um3(value: Any, where: str, or_else: str = "") -> float:
    """A least 3D nucleus volume: um^3 >= 0 (0 keeps every nucleus)."""
    number = _number(value)
    if not (math.isfinite(number) and number >= 0):
        raise input_error(where, f"got {value!r}", "give a 3D nucleus volume in um^3 >= 0 (0: keep all, e.g. 20)"
                          + (f", {or_else}" if or_else else ""))
    return number


#: config key -> its check (``check(value, where, or_else)``)
POSTPROCESS_VALUE_CHECKS = {"np_threshold": check_np_threshold, "min_instance_size": check_min_instance_size,
                            "min_volume_um3": check_min_volume_um3}
