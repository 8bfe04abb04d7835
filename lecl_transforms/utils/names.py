"""File names: which files are stacks, the stem every output of a stack is named after, text of user files."""

from __future__ import annotations

from pathlib import Path

from ..errors import input_error

__all__ = ["TIFF_SUFFIXES", "NIFTI_SUFFIXES", "IMAGE_SUFFIXES", "is_stack_file", "stem_of", "unique_stems",
           "decode_text"]

#: suffixes of the stacks the reader opens (without the dot, as MONAI's ``is_supported_format`` takes them)
TIFF_SUFFIXES = ("tif", "tiff")
NIFTI_SUFFIXES = ("nii", "nii.gz")
#: the same with the dot, as file names end
IMAGE_SUFFIXES = tuple(f".{s}" for s in TIFF_SUFFIXES + NIFTI_SUFFIXES)
_STEM_SUFFIXES = (".ome.tiff", ".ome.tif", ".nii.gz", ".tiff", ".tif", ".nii")


def is_stack_file(path) -> bool:
    """Whether ``path``'s name ends like a stack the reader opens (TIFF or NIfTI, any case)."""
    return Path(path).name.lower().endswith(IMAGE_SUFFIXES)


def stem_of(path) -> str:
    """File name without its image/CSV extension (``a.ome.tif`` -> ``a``, ``b.nii.gz`` -> ``b``)."""
    name = Path(path).name
    for ext in _STEM_SUFFIXES:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def unique_stems(images) -> list[str]:
    """The output stems of ``images`` in order; two stacks with one stem (``a.tif`` and ``a.nii.gz``, or the same
    name in two folders) would write the same output files, which is refused."""
    stems: dict[str, str] = {}
    for image in images:
        stem = stem_of(image)
        if stem in stems:
            raise input_error(image, f"has the same name '{stem}' as {stems[stem]}",
                              "give every stack a distinct file name (outputs are named after it)")
        stems[stem] = image
    return list(stems)


def decode_text(raw: bytes, path, kind: str, fix: str) -> str:
    """Text of a user file: UTF-8 (with or without BOM), UTF-16 with BOM, else cp1252 (files saved on Windows)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        encodings = ("utf-16",)
    else:
        encodings = ("utf-8-sig", "cp1252")
    for encoding in encodings:
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise input_error(path, f"the {kind} is neither UTF-8 nor Windows (cp1252) text", fix)
