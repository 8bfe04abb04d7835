"""The prediction QC picture ``STEM_pred_qc.png``: what a person looks at to judge one stack's predictions.

Layout (no canvas beyond the panels)::

    +-------------------------------------------------------------+
    | STEM: 84 nuclei, 40 positive (47.6%), 44 negative           |  header: counts
    | [magenta] positive  [yellow] negative  outlines: centre slice |  legend
    +------------------------------+---+--------------------------+
    | max projection: nuclei cyan, marker red | outlines by class |  panel titles
    | composite, as the data is    |   | the same, each nucleus   |
    |                              |   | outlined once            |
    |                     |-20 um-||   |                 |-20 um-||  scale bar (when the spacing is known)
    +------------------------------+---+--------------------------+

Both panels show the stack's max projection (marker red, nuclei cyan, each contrast-stretched); the right one adds
each nucleus' outline once: the inner boundary of its footprint on its *centre slice* (the slice where its
footprint is largest, the one the QuPath GeoJSON outlines), in its class colour (positive magenta over negative
yellow). The panels sit side by side, or one above the other for a field much wider than tall. Stacks larger than
``max_side`` pixels are shown downsampled by a whole factor (said in the legend; small nuclei may then drop out of
the outlines). Drawing is numpy/scikit-image with Pillow's text.
"""

from __future__ import annotations

import numpy as np

__all__ = ["qc_picture", "qc_title", "scale_bar_length", "QC_MAX_SIDE"]

#: largest panel side in pixels: larger fields are shown downsampled by a whole factor
QC_MAX_SIDE = 2048
_BACKGROUND = (24, 24, 24)
_TEXT = (255, 255, 255)
_MUTED = (190, 190, 190)
_GAP = (255, 255, 255)


def qc_title(stem: str, classes: np.ndarray) -> str:
    """``"STEM: 412 nuclei, 171 positive (41.5%), 241 negative"`` for ``classes`` (M,) in {1, 2}."""
    classes = np.asarray(classes)
    n, positive = len(classes), int((classes == 2).sum())
    share = f" ({100 * positive / n:.1f}%)" if n else ""
    return f"{stem}: {n} {'nucleus' if n == 1 else 'nuclei'}, {positive} positive{share}, {n - positive} negative"


def scale_bar_length(width_px: int, um_per_px: float, fraction: float = 0.2) -> tuple[float, float]:
    """A round scale-bar length (1, 2 or 5 x 10^k um) of at most ``fraction`` of a panel ``width_px`` wide;
    returns ``(um, pixels)``."""
    target = width_px * um_per_px * fraction
    power = 10.0 ** np.floor(np.log10(target))
    um = max(m * power for m in (1, 2, 5) if m * power <= target)
    return float(um), float(um / um_per_px)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def _space(font) -> float:
    """Word spacing: Pillow's built-in font has 2-3 px spaces at small sizes, which run words together."""
    return max(font.getlength(" "), 0.3 * font.size if hasattr(font, "size") else 4)


def _text_width(text: str, font) -> float:
    words = text.split(" ")
    return sum(font.getlength(w) for w in words) + _space(font) * (len(words) - 1)


def _draw_text(draw, xy, text: str, font, colour) -> float:
    """Draw ``text`` word by word with :func:`_space` between words; returns the x after it."""
    x, y = xy
    for i, word in enumerate(text.split(" ")):
        if word:
            draw.text((x, y), word, fill=colour, font=font)
        x += font.getlength(word) + _space(font)
    return x - _space(font)


def _fitting_font(text: str, width: int, size: int, min_size: int = 8):
    """The largest font from ``size`` down to ``min_size`` in which ``text`` fits ``width`` pixels."""
    for s in range(size, min_size - 1, -1):
        font = _font(s)
        if _text_width(text, font) <= width:
            return font
    return _font(min_size)


def _text_bar(segments: list[list[tuple]], width: int, size: int) -> np.ndarray:
    """A dark ``(H, width, 3)`` bar, one line per entry of ``segments``; a line is ``(text, colour)`` pairs, where a
    ``("■", colour)`` pair draws a colour swatch. Each line's font shrinks until it fits ``width``."""
    from PIL import Image, ImageDraw

    pad = max(2, size // 3)
    line_height = int(round(size * 1.45))
    bar = Image.new("RGB", (width, line_height * len(segments) + pad), _BACKGROUND)
    draw = ImageDraw.Draw(bar)
    for row, line in enumerate(segments):
        plain = " ".join("xx" if text == "■" else text for text, _ in line)
        font = _fitting_font(plain, width - 2 * pad, size)
        x, top = pad, pad + row * line_height
        ascent = font.getbbox("Hg")
        baseline = top + (line_height - (ascent[3] - ascent[1])) // 2 - ascent[1] - pad // 2
        for text, colour in line:
            if text == "■":  # a swatch the height of a capital letter
                side = max(4, ascent[3] - ascent[1] - 2)
                y0 = baseline + ascent[1] + (ascent[3] - ascent[1] - side) // 2
                draw.rectangle([x, y0, x + side, y0 + side], fill=colour)
                x += side + _space(font)
                continue
            x = _draw_text(draw, (x, baseline), text, font, colour) + _space(font)
    return np.asarray(bar)


def _draw_scale_bar(panel: np.ndarray, um_per_px: float, size: int) -> None:
    """A white bar of :func:`scale_bar_length` with its length written above, bottom right on a darkened box (in
    place)."""
    from PIL import Image, ImageDraw

    height, width = panel.shape[:2]
    um, length = scale_bar_length(width, um_per_px)
    length = max(1, int(round(length)))
    label = f"{um:g} um"  # Pillow's built-in font has no µ
    font = _font(size)
    left, top, right, bottom = font.getbbox(label)
    thick, margin, pad = max(2, width // 150), max(3, width // 50), max(2, size // 4)
    x1, y1 = width - margin, height - margin
    x0, y0 = x1 - length, y1 - thick
    box = (max(0, min(x0, x1 - (right - left)) - pad), max(0, y0 - (bottom - top) - 3 * pad), width,
           height)
    panel[box[1]:box[3], box[0]:box[2]] //= 3  # darkened, so the white bar reads on bright tissue too
    image = Image.fromarray(panel)
    draw = ImageDraw.Draw(image)
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=_TEXT)
    draw.text(((x0 + x1 - (right - left)) // 2 - left, y0 - pad - bottom), label, fill=_TEXT, font=font)
    panel[:] = np.asarray(image)


def _centre_outlines(labels: np.ndarray, centre_z: np.ndarray, classes: np.ndarray, step: int) -> np.ndarray:
    """``(Y', X')`` uint8: the class of each outline pixel (0 none), every nucleus outlined once on its centre slice
    (inner boundary, so touching nuclei keep one line each; positive over negative). One pass per centre slice
    through lookup tables, no per-nucleus loop; ``step`` subsamples (y, x)."""
    from skimage.segmentation import find_boundaries

    outline = np.zeros(labels[0, ::step, ::step].shape, np.uint8)
    for z in np.unique(centre_z[centre_z >= 0]):
        plane = labels[z, ::step, ::step]
        footprint = np.where(centre_z[plane] == z, plane, 0)  # the nuclei whose centre slice is z
        edge = find_boundaries(footprint, mode="inner")
        np.maximum(outline, np.where(edge, classes[footprint], 0).astype(np.uint8), out=outline)
    return outline


def _downsampled(rgb: np.ndarray, step: int) -> np.ndarray:
    """Block mean over ``step x step`` pixels (edge blocks padded by their own values): the size of ``[::step]``."""
    if step == 1:
        return rgb
    height, width = rgb.shape[:2]
    pad = ((0, -height % step), (0, -width % step), (0, 0))
    blocks = np.pad(rgb, pad, mode="edge").astype(np.float32)
    blocks = blocks.reshape(blocks.shape[0] // step, step, blocks.shape[1] // step, step, 3)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def qc_picture(labels: np.ndarray, centre_z: np.ndarray, classes: np.ndarray, mip: np.ndarray, stem: str,
               um_per_px: float | None = None, max_side: int = QC_MAX_SIDE) -> np.ndarray:
    """The QC picture (module docstring) as ``(H, W, 3)`` uint8.

    ``labels`` ``(Z, Y, X)``; ``centre_z`` ``(M + 1,)`` and ``classes`` ``(M + 1,)`` lookup tables by id (entry 0
    unused; classes 1 negative, 2 positive); ``mip`` ``(2, Y, X)`` nuclei/marker projection; ``um_per_px`` the (y, x)
    pixel size (``dx``) for the scale bar, None when unknown (no scale bar, said in the legend).
    """
    from ..visualize import CLASS_COLOURS, composite_rgb

    centre_z, classes = np.asarray(centre_z), np.asarray(classes)
    n_y, n_x = labels.shape[1:]
    step = max(1, int(np.ceil(max(n_y, n_x) / max_side)))
    composite = _downsampled(composite_rgb(mip[0], mip[1]), step)
    outline = _centre_outlines(labels, centre_z, classes, step)
    outlined = composite.copy()
    for c in sorted(CLASS_COLOURS):
        outlined[outline == c] = CLASS_COLOURS[c]
    height, width = composite.shape[:2]
    side_by_side = width <= 1.5 * height
    canvas_width = 2 * width + max(2, width // 128) if side_by_side else width
    size = int(np.clip(canvas_width // 40, 12, 40))  # text readable when the picture is shown at screen width

    panels = []
    for picture, title in ((composite, "max projection: nuclei cyan, marker red"),
                           (outlined, "nuclei outlined on their centre slice")):
        if um_per_px:
            _draw_scale_bar(picture, um_per_px * step, size)
        panels.append(np.concatenate([_text_bar([[(title, _MUTED)]], width, size), picture]))
    if side_by_side:
        gap = np.full((panels[0].shape[0], canvas_width - 2 * width, 3), _GAP, np.uint8)
        body = np.concatenate([panels[0], gap, panels[1]], axis=1)
    else:
        body = np.concatenate([panels[0], np.full((max(2, height // 128), width, 3), _GAP, np.uint8), panels[1]])

    n = len(classes) - 1
    positive = int((classes[1:] == 2).sum())
    notes = [] if um_per_px else ["spacing unknown: no scale bar"]
    if step > 1:
        notes.append(f"shown at 1/{step} scale")
    legend = [("■", CLASS_COLOURS[2]), (f"positive {positive} ", _TEXT),
              ("■", CLASS_COLOURS[1]), (f"negative {n - positive}", _TEXT)]
    if notes:
        legend.append((" - " + "; ".join(notes), _MUTED))
    header = _text_bar([[(qc_title(stem, classes[1:]), _TEXT)], legend], canvas_width, size)
    return np.concatenate([header, body])
