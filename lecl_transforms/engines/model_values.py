"""The values inference takes from the model unless the user sets them: the post-processing values calibrated at
the end of its training, and the pixel size of its training images.

The rule, for every caller of the one pipeline (``lecl predict``, ``monai.bundle run inference``, training
validation, MONAI Label), and said in one log line per value:

* a value set in ``inference.json`` or on the command line (not ``null``) wins;
* else the model's stored value (``np_threshold``, ``min_instance_size``, ``min_volume_um3``: calibrated on its
  validation stacks; ``pixel_size_yx``: its training images');
* else ``inference.json``'s documented fallback (``fallback_postprocessing``), or, for the pixel size, no rescaling.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..errors import input_error
from ..utils.values import ARGMAX, POSTPROCESS_VALUE_CHECKS, check_np_threshold, optional

__all__ = ["resolve_postprocessing", "resolve_model_pixel_size", "ARGMAX"]

logger = logging.getLogger(__name__)

_CALIBRATED_OR = "or null for the model's calibrated value"


def _parse(key: str, value, where: str):
    """A post-processing value checked (the one check per key); ``np_threshold`` also takes ``"argmax"``."""
    if key == "np_threshold":
        return check_np_threshold(value, where, _CALIBRATED_OR, argmax=True)
    return POSTPROCESS_VALUE_CHECKS[key](value, where, _CALIBRATED_OR)


def _shown(value) -> str:
    return ARGMAX if value is None else f"{value:g}"


def resolve_postprocessing(description, settings: Mapping, fallbacks: Mapping) -> dict:
    """The post-processing values to use, by the module's rule: ``settings`` (``inference.json``'s
    ``np_threshold``, ``min_instance_size``, ``min_volume_um3``; ``null`` = not set), the model's calibrated values
    (``description``: a :class:`~lecl_transforms.networks.ModelDescription`), ``fallbacks``
    (``fallback_postprocessing``). Returns ``{key: value, ..., "from": {key: where it came from}}``;
    ``np_threshold`` ``None`` means argmax (``np_threshold: "argmax"``)."""
    values, sources = {}, {}
    calibration = getattr(description, "calibration", None) or {}
    for key, given in settings.items():
        if key not in POSTPROCESS_VALUE_CHECKS:
            raise ValueError(f"{key} is not a calibrated post-processing value ({list(POSTPROCESS_VALUE_CHECKS)})")
        given, stored = optional(given), getattr(description, key, None)
        if given is not None:
            values[key], sources[key] = _parse(key, given, f"config: {key}"), "set"
            note = "" if stored is None else f"; the model's calibrated {_shown(stored)} is not used"
            logger.info(f"{key} {_shown(values[key])}: as set (inference.json or command line){note}")
        elif stored is not None:
            values[key], sources[key] = _parse(key, stored, f"model description: {key}"), "model (calibrated)"
            f1 = calibration.get("score")
            measured = "" if f1 is None else f" (detection F1 {f1:.3f} on {calibration.get('stacks')} validation " \
                                             "stacks)"
            logger.info(f"{key} {_shown(values[key])}: the model's calibrated value{measured}; set {key} to "
                        "override it")
        else:
            if key not in fallbacks:
                raise input_error(f"config: fallback_postprocessing#{key}", "missing",
                                  f"give the {key} used when the model records none")
            values[key], sources[key] = _parse(key, fallbacks[key], f"config: fallback_postprocessing#{key}"), \
                "fallback"
            logger.info(f"{key} {_shown(values[key])}: inference.json's fallback (the model records no calibrated "
                        "value)")
    return {**values, "from": sources}


def resolve_model_pixel_size(description, rescale: bool = True, model_pixel_size_um=None) -> list[float] | None:
    """The ``(y, x)`` pixel size in um each stack's slices are rescaled to before the network, or ``None`` (no
    rescaling): ``rescale`` false -> ``None``; ``model_pixel_size_um`` (a number or ``[y, x]``) when set; else the
    model's recorded ``pixel_size_yx``; else ``None`` (models trained before it was recorded). Logs which."""
    given = optional(model_pixel_size_um)
    if not rescale:
        logger.info("rescale false: slices go to the network at the stack's own pixel size")
        return None
    if given is not None:
        try:
            values = [float(given)] * 2 if isinstance(given, (int, float, str)) else [float(v) for v in given]
        except (TypeError, ValueError):
            values = []
        if len(values) != 2 or min(values) <= 0:
            raise input_error("config: model_pixel_size_um", f"got {given!r}",
                              "give the model's pixel size in um, one number or [y, x] (e.g. 0.5), or null for "
                              "the size its training recorded")
        logger.info(f"model pixel size {_yx(values)} um as set (model_pixel_size_um): stacks of another pixel size "
                    "are rescaled to it")
        return values
    stored = getattr(description, "pixel_size_yx", None)
    if stored is None:
        logger.info("the model records no pixel size (trained before LECL recorded it): slices are not rescaled; "
                    "set model_pixel_size_um to rescale")
        return None
    values = [float(v) for v in stored]
    logger.info(f"model pixel size {_yx(values)} um (its training images'): stacks of another pixel size are "
                "rescaled to it (rescale false to switch off)")
    return values


def _yx(values) -> str:
    y, x = (f"{v:g}" for v in values)
    return y if y == x else f"{y} x {x} (y x)"
