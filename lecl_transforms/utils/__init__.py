"""The bottom layer: what every other layer uses and nothing of the package below it (only :mod:`..errors`).

* :mod:`.values` -- config and command-line values as users mean them (``flag``, ``optional``, ``check_choice``) and
  the one check per post-processing value (``check_np_threshold``, ``check_min_instance_size``,
  ``check_min_volume_um3``);
* :mod:`.names` -- file names: stack suffixes, output stems, text decoding of user files;
* :mod:`.files` -- atomic writes, JSON, the output-folder guard and its manifest;
* :mod:`.spacing` -- the one precedence rule for a stack's voxel spacing.

The layer order of the package (a module imports only from its own layer or below) is in ``ARCHITECTURE.md``."""

from .files import (
    atomic_path,
    check_out_dir,
    check_out_files,
    make_dirs,
    read_manifest,
    remove_empty_dirs,
    remove_stale,
    write_json,
    write_manifest,
)
from .names import IMAGE_SUFFIXES, NIFTI_SUFFIXES, TIFF_SUFFIXES, decode_text, is_stack_file, stem_of, unique_stems
from .spacing import resolve_spacing
from .values import (
    ARGMAX,
    POSTPROCESS_VALUE_CHECKS,
    check_choice,
    check_min_instance_size,
    check_min_volume_um3,
    check_np_threshold,
    flag,
    optional,
)

__all__ = [
    "flag", "optional", "check_choice", "stem_of", "unique_stems", "decode_text", "is_stack_file",
    "IMAGE_SUFFIXES", "TIFF_SUFFIXES", "NIFTI_SUFFIXES", "atomic_path", "write_json", "check_out_dir",
    "check_out_files", "make_dirs",
    "remove_empty_dirs", "read_manifest", "write_manifest", "remove_stale", "resolve_spacing", "ARGMAX",
    "check_np_threshold", "check_min_instance_size", "check_min_volume_um3", "POSTPROCESS_VALUE_CHECKS",
]
