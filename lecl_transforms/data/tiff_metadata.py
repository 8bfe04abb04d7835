"""What TIFF files say about themselves: physical units and spacing (ImageJ, OME), and whether all announced planes
are really there (a truncated copy is reported as such, not as a wrong shape)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import input_error

__all__ = ["um_per", "read_tiff_series", "imagej_spacing", "ome_spacing"]


# micrometres per unit, for the unit names that ImageJ, OME and NIfTI write
_UM_PER_UNIT = {
    "micron": 1.0, "microns": 1.0, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "\\u00b5m": 1.0, "micrometer": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6, "meter": 1e6,
}


def um_per(unit: str | None) -> float | None:
    return None if unit is None else _UM_PER_UNIT.get(str(unit).strip().lower())


def read_tiff_series(tif, path: Path) -> np.ndarray:
    """The first series' pixels, or an error when the file is cut short or otherwise unreadable."""
    fix = "copy the file again (a transfer or save may have stopped early) or re-export it from Fiji/ImageJ"
    announced = None
    try:
        series = tif.series[0]
        plane = max(int(np.prod(tif.pages[0].shaped)), 1)  # pixels per plane, samples included
        announced, readable = _announced_planes(tif, plane), int(np.prod(series.shape)) // plane
        listed = list(getattr(series, "_pages", ()))  # tifffile keeps None for planes it could not find ...
        holes = len(listed) == len(series) and None in listed  # ... and would fill them with zeros
        if holes:
            announced, readable = len(listed), len(listed) - listed.count(None)
        # fewer planes than announced on a file that is also physically short (tifffile then falls back to the first
        # page, a "2D image"); wrong metadata on complete data is left to the other checks
        if not holes and not ((announced is None or readable < announced) and _runs_past_end(tif, announced)):
            return series.asarray()
    except Exception as e:
        if "failed to read" not in str(e):  # not a short read: a codec or a corrupt structure
            raise input_error(path, f"not a readable TIFF ({e})", fix) from e
        size = tif.filehandle.size
        readable = sum(all(o + c <= size for o, c in zip(p.dataoffsets, p.databytecounts)) for p in tif.pages)
    counts = f"metadata announces {announced} planes, {readable} readable" if announced else \
        f"{readable} plane(s) readable, and the file points past its end"
    raise input_error(path, f"the file is truncated or incomplete ({counts})", fix)


def _announced_planes(tif, plane: int) -> int | None:
    """Planes (samples included) the ImageJ header or tifffile's shaped description says the file holds."""
    meta = tif.imagej_metadata if tif.is_imagej else None
    if meta:
        samples = tif.pages[0].shaped[0] * tif.pages[0].shaped[4]
        channels = meta.get("channels", 1)
        n = meta.get("frames", 1) * meta.get("slices", 1) * (1 if channels == samples else channels)
        return int(n if n > 1 else meta.get("images", 1))  # channels stored as RGB samples are no extra planes
    shaped = tif.shaped_metadata if tif.is_shaped else None
    return int(np.prod(shaped[0]["shape"])) // plane if shaped and shaped[0].get("shape") else None


def _runs_past_end(tif, announced: int | None) -> bool:
    """Whether the file points past its own end: ImageJ's contiguous planes, a value of the first page's tags (OME-XML
    is written last by most writers), or the last page's data or next-page link."""
    import struct

    from tifffile import TIFF

    fh, size, first = tif.filehandle, tif.filehandle.size, tif.pages[0]

    def ifd(page):  # an IFD's raw tag entries and link to the next page
        fh.seek(page.offset)
        (n_tags,) = struct.unpack(fmt.tagnoformat, fh.read(fmt.tagnosize))
        raw = fh.read(n_tags * fmt.tagsize + fmt.offsetsize)
        return [raw[k * fmt.tagsize:(k + 1) * fmt.tagsize] for k in range(n_tags)], raw[-fmt.offsetsize:]

    try:
        fmt = tif.tiff
        if announced and tif.is_imagej and first.compression == 1:
            if first.dataoffsets[0] + announced * first.nbytes > size:
                return True
        last = tif.pages[len(tif.pages) - 1]
        if any(o + c > size for o, c in zip(last.dataoffsets, last.databytecounts)):
            return True
        for entry in ifd(first)[0]:
            count, value = struct.unpack(fmt.tagformat2, entry[4:])
            dtype = TIFF.DATA_FORMATS.get(struct.unpack(fmt.tagformat1, entry[:4])[1], "1B")
            nbytes = count * struct.calcsize(fmt.byteorder + dtype)
            if nbytes > fmt.tagoffsetthreshold and struct.unpack(fmt.offsetformat, value)[0] + nbytes > size:
                return True
        (next_page,) = struct.unpack(fmt.offsetformat, ifd(last)[1])
    except (struct.error, OSError, IndexError):  # the structure itself is cut
        return True
    except Exception:  # a tifffile without these internals: cannot tell, let the reading decide
        return False
    return next_page >= size  # 0 ends the chain


def imagej_spacing(meta: Mapping, page) -> list[float | None]:
    scale = um_per(meta.get("unit")) if meta.get("unit") else None
    dz = meta.get("spacing")
    out: list[float | None] = [float(dz) * scale if (dz and scale) else None, None, None]
    for i, tag in ((1, "YResolution"), (2, "XResolution")):
        t = page.tags.get(tag)
        if t is not None and scale:
            num, den = t.value
            if num and (num, den) != (1, 1):
                out[i] = den / num * scale
    return out


def ome_spacing(xml: str) -> list[float | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return [None, None, None]
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return [None, None, None]
    out: list[float | None] = []
    for ax in "ZYX":
        value = pixels.get(f"PhysicalSize{ax}")
        scale = um_per(pixels.get(f"PhysicalSize{ax}Unit", "µm"))
        out.append(float(value) * scale if value is not None and scale else None)
    return out
