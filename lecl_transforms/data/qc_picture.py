"""QC pictures: what a person looks at to judge a stack, and the building blocks they share.

Every QC picture has one layout (no canvas beyond the panels)::

    +-------------------------------------------------------------+
    | STEM: 84 nuclei, 40 positive (47.6%), 44 negative           |  header: counts (and scores)
    | [magenta] positive  [yellow] negative  outlines: centre slice |  legend
    +------------------------------+---+--------------------------+
    | max projection: nuclei cyan, marker red | outlines by class |  panel titles
    | composite, as the data is    |   | the same, each nucleus   |
    |                              |   | outlined once            |
    |                     |-20 um-||   |                 |-20 um-||  scale bar (when the spacing is known)
    +------------------------------+---+--------------------------+

built by :func:`qc_figure` from titled panels and header lines: the panels sit side by side, or one above the other
for a field much wider than tall; fields larger than ``max_side`` pixels are shown reduced by a whole factor
(:func:`reduction_step`, :func:`downsampled`; said in the header). Marks are drawn at the shown scale: each nucleus
outlined once on its centre slice (:func:`centre_outlines`, :func:`paint`), rings around points (:func:`draw_rings`).

The pictures built here:

* :func:`qc_picture`, ``STEM_pred_qc.png`` of ``lecl predict``: the stack's max projection (marker red, nuclei cyan,
  each contrast-stretched) as is and with each nucleus' outline once: the inner boundary of its footprint on its
  *centre slice* (the slice where its footprint is largest, the one the QuPath GeoJSON outlines), in its class colour
  (positive magenta over negative yellow).
* :func:`evaluation_picture`, ``STEM_eval_qc.png`` of ``lecl evaluate``: the prediction against the clicks, on the
  dimmed max projection. Left, detection: each prediction outlined on its centre slice, green when matched to a
  click, magenta when no click matched it (false); an orange ring of the matching radius around each click no
  prediction matched (missed). Right, the marker class of the matched nuclei: green when the call agrees with the
  click, orange for a positive called negative, magenta for a negative called positive. Colours follow one rule:
  green agrees, orange = the truth has what the prediction lacks, magenta = the prediction has what the truth lacks.

``lecl prepare``'s ``STEM_qc.png`` is drawn with the same blocks (:mod:`lecl_transforms.tools.prepare`). Drawing is
numpy/scikit-image with Pillow's text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["qc_picture", "evaluation_picture", "qc_figure", "qc_title", "legend_line", "scale_bar_length",
           "reduction_step", "downsampled", "centre_outlines", "paint", "draw_rings", "QC_MAX_SIDE", "TEXT", "MUTED",
           "AGREES", "MISSED", "FALSE"]

#: largest panel side in pixels: larger fields are shown downsampled by a whole factor
QC_MAX_SIDE = 2048
_BACKGROUND = (24, 24, 24)
TEXT = (255, 255, 255)
MUTED = (190, 190, 190)
_GAP = (255, 255, 255)
_SWATCH = "■"
#: evaluation colours: prediction and click agree / the click has no (right) prediction / the prediction no click
AGREES, MISSED, FALSE = (0, 230, 0), (255, 140, 0), (255, 0, 255)


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


def _plain(line: list[tuple]) -> str:
    return " ".join("xx" if text == _SWATCH else text for text, _ in line)


def _fitted_rows(line: list[tuple], width: int, size: int) -> tuple[object, list[list[tuple]]]:
    """``(font, rows)``: ``line`` in the largest font down to 3/4 of ``size`` in which it fits ``width``; a line too
    long even then is wrapped between words into several rows of that smallest font (a swatch stays with the word
    after it), so no text is cut off on a narrow picture."""
    smallest = max(8, int(round(0.75 * size)))
    font = _fitting_font(_plain(line), width, size, smallest)
    if _text_width(_plain(line), font) <= width:
        return font, [line]
    words: list[list[tuple]] = []  # each: the (text, colour) pieces that stay together
    for text, colour in line:
        if text == _SWATCH:
            words.append([(text, colour)])
            continue
        for word in text.split(" "):
            if not word:
                continue
            if words and words[-1][-1][0] == _SWATCH:
                words[-1].append((word, colour))
            else:
                words.append([(word, colour)])
    rows: list[list[tuple]] = [[]]
    for word in words:
        if rows[-1] and _text_width(_plain(rows[-1] + word), font) > width:
            rows.append([])
        rows[-1] += word
    return font, rows


def _text_bar(segments: list[list[tuple]], width: int, size: int) -> np.ndarray:
    """A dark ``(H, width, 3)`` bar, one line per entry of ``segments``; a line is ``(text, colour)`` pairs, where a
    ``("■", colour)`` pair draws a colour swatch. Each line's font shrinks until it fits ``width``, down to 3/4 of
    ``size``; a longer line wraps onto more rows."""
    from PIL import Image, ImageDraw

    pad = max(2, size // 3)
    line_height = int(round(size * 1.45))
    rows = [(font, row) for line in segments for font, fitted in [_fitted_rows(line, width - 2 * pad, size)]
            for row in fitted]
    bar = Image.new("RGB", (width, line_height * len(rows) + pad), _BACKGROUND)
    draw = ImageDraw.Draw(bar)
    for index, (font, line) in enumerate(rows):
        x, top = pad, pad + index * line_height
        ascent = font.getbbox("Hg")
        baseline = top + (line_height - (ascent[3] - ascent[1])) // 2 - ascent[1] - pad // 2
        for text, colour in line:
            if text == _SWATCH:  # a swatch the height of a capital letter
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
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=TEXT)
    draw.text(((x0 + x1 - (right - left)) // 2 - left, y0 - pad - bottom), label, fill=TEXT, font=font)
    panel[:] = np.asarray(image)


def legend_line(items: Sequence[tuple], colour=TEXT) -> list[tuple]:
    """A header line of ``(swatch colour, text)`` items (a swatch colour None: plain text), for :func:`qc_figure`."""
    line: list[tuple] = []
    for i, (swatch, text) in enumerate(items):
        if swatch is not None:
            line.append((_SWATCH, tuple(swatch)))
        line.append((text + ("  " if i < len(items) - 1 else ""), colour))
    return line


# -- reduced scale and marks ------------------------------------------------------------------------------------------
def reduction_step(shape_yx: Sequence[int], max_side: int = QC_MAX_SIDE) -> int:
    """The whole factor by which a ``(Y, X)`` field is shown reduced so that no side exceeds ``max_side``."""
    return max(1, int(np.ceil(max(shape_yx) / max_side)))


def downsampled(rgb: np.ndarray, step: int) -> np.ndarray:
    """Block mean over ``step x step`` pixels (edge blocks padded by their own values): the size of ``[::step]``."""
    if step == 1:
        return rgb
    height, width = rgb.shape[:2]
    pad = ((0, -height % step), (0, -width % step), (0, 0))
    blocks = np.pad(rgb, pad, mode="edge").astype(np.float32)
    blocks = blocks.reshape(blocks.shape[0] // step, step, blocks.shape[1] // step, step, 3)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def centre_outlines(labels: np.ndarray, centre_z: np.ndarray, codes: np.ndarray, step: int = 1) -> np.ndarray:
    """``(Y', X')`` uint8: the code of each outline pixel (0 none), every nucleus outlined once on its centre slice
    (inner boundary, so touching nuclei keep one line each; the higher code wins where lines cross). ``centre_z``
    and ``codes`` are lookup tables by nucleus id (entry 0 unused; centre -1 or code 0: not drawn). One pass per
    centre slice through the lookup tables, no per-nucleus loop; ``step`` subsamples (y, x)."""
    from skimage.segmentation import find_boundaries

    centre_z, codes = np.asarray(centre_z), np.asarray(codes)
    outline = np.zeros(labels[0, ::step, ::step].shape, np.uint8)
    for z in np.unique(centre_z[centre_z >= 0]):
        plane = labels[z, ::step, ::step]
        footprint = np.where(centre_z[plane] == z, plane, 0)  # the nuclei whose centre slice is z
        edge = find_boundaries(footprint, mode="inner")
        np.maximum(outline, np.where(edge, codes[footprint], 0).astype(np.uint8), out=outline)
    return outline


def paint(rgb: np.ndarray, code_map: np.ndarray, colours: Mapping[int, tuple]) -> np.ndarray:
    """A copy of ``rgb`` with the pixels of each code of ``code_map`` in its colour (code 0 left as is)."""
    out = rgb.copy()
    for code, colour in colours.items():
        out[code_map == code] = colour
    return out


def draw_rings(rgb: np.ndarray, yx, colour, radius: float = 7.0) -> np.ndarray:
    """A copy of ``rgb`` with a ring of ``radius`` pixels (about 1.5 px wide) around each point ``yx`` ``(N, 2)``
    (points rounded and clipped to the image; one distance transform for all)."""
    from scipy import ndimage

    yx = np.asarray(yx, dtype=np.float64).reshape(-1, 2)
    out = rgb.copy()
    if len(yx) == 0:
        return out
    yx = np.clip(np.rint(yx).astype(np.int64), 0, np.array(rgb.shape[:2]) - 1)
    seeds = np.ones(rgb.shape[:2], bool)
    seeds[yx[:, 0], yx[:, 1]] = False
    distance = ndimage.distance_transform_edt(seeds)
    out[(distance >= radius - 0.7) & (distance <= radius + 0.7)] = colour
    return out


# -- layout -----------------------------------------------------------------------------------------------------------
def qc_figure(panels: Sequence[tuple[np.ndarray, str]], header: list[list[tuple]], um_per_px: float | None = None,
              step: int = 1) -> np.ndarray:
    """The QC layout (module docstring) as ``(H, W, 3)`` uint8: ``panels`` ``[(rgb (Y', X', 3), title), ...]`` of
    one size, side by side (one above the other for a field wider than 1.5 x its height), each titled and with a
    scale bar of ``um_per_px`` (the full-resolution (y, x) pixel size; None: no bar); above them a dark header of
    ``header`` lines (``[(text, colour), ...]``, see :func:`legend_line`), the last one extended by what the reader
    must know: no spacing, shown at ``1/step`` scale."""
    height, width = panels[0][0].shape[:2]
    side_by_side = width <= 1.5 * height
    gap = max(2, width // 128) if side_by_side else max(2, height // 128)
    canvas_width = len(panels) * width + (len(panels) - 1) * gap if side_by_side else width
    size = int(np.clip(canvas_width // 40, 12, 40))  # text readable when the picture is shown at screen width

    titles = [_text_bar([[(title, MUTED)]], width, size) for _, title in panels]
    title_height = max(t.shape[0] for t in titles)  # a title wrapped onto more rows: the others padded to match
    titled = []
    for (picture, _), title in zip(panels, titles):
        picture = np.array(picture, dtype=np.uint8)
        if um_per_px:
            _draw_scale_bar(picture, um_per_px * step, size)
        title = np.pad(title, ((0, title_height - title.shape[0]), (0, 0), (0, 0)), mode="edge")
        titled.append(np.concatenate([title, picture]))
    if side_by_side:
        gap_block = np.full((titled[0].shape[0], gap, 3), _GAP, np.uint8)
        axis = 1
    else:
        gap_block = np.full((gap, width, 3), _GAP, np.uint8)
        axis = 0
    parts = [titled[0]]
    for panel in titled[1:]:
        parts += [gap_block, panel]
    body = np.concatenate(parts, axis=axis)

    notes = [] if um_per_px else ["spacing unknown: no scale bar"]
    if step > 1:
        notes.append(f"shown at 1/{step} scale")
    lines = [list(line) for line in header]
    if notes:
        lines[-1].append((" - " + "; ".join(notes), MUTED))
    return np.concatenate([_text_bar(lines, canvas_width, size), body])


# -- the pictures -----------------------------------------------------------------------------------------------------
def qc_picture(labels: np.ndarray, centre_z: np.ndarray, classes: np.ndarray, mip: np.ndarray, stem: str,
               um_per_px: float | None = None, max_side: int = QC_MAX_SIDE) -> np.ndarray:
    """The prediction QC picture (module docstring) as ``(H, W, 3)`` uint8.

    ``labels`` ``(Z, Y, X)``; ``centre_z`` ``(M + 1,)`` and ``classes`` ``(M + 1,)`` lookup tables by id (entry 0
    unused; classes 1 negative, 2 positive); ``mip`` ``(2, Y, X)`` nuclei/marker projection; ``um_per_px`` the (y, x)
    pixel size (``dx``) for the scale bar, None when unknown (no scale bar, said in the legend).
    """
    from ..visualize import CLASS_COLOURS, composite_rgb

    centre_z, classes = np.asarray(centre_z), np.asarray(classes)
    step = reduction_step(labels.shape[1:], max_side)
    composite = downsampled(composite_rgb(mip[0], mip[1]), step)
    outlined = paint(composite, centre_outlines(labels, centre_z, classes, step), CLASS_COLOURS)
    n = len(classes) - 1
    positive = int((classes[1:] == 2).sum())
    legend = legend_line([(CLASS_COLOURS[2], f"positive {positive}"), (CLASS_COLOURS[1], f"negative {n - positive}")])
    return qc_figure([(composite, "max projection: nuclei cyan, marker red"),
                      (outlined, "nuclei outlined on their centre slice")],
                     [[(qc_title(stem, classes[1:]), TEXT)], legend], um_per_px, step)


def _score(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def evaluation_picture(mip: np.ndarray | None, stem: str, pred: Mapping, truth: tuple, match: tuple,
                       scores: Mapping, *, labels: np.ndarray | None = None, centre_z: np.ndarray | None = None,
                       um_per_px: float | None = None, radius_um: float = 3.0, shape_yx: Sequence[int] | None = None,
                       note: str | None = None, max_side: int = QC_MAX_SIDE) -> np.ndarray:
    """The evaluation QC picture (module docstring) as ``(H, W, 3)`` uint8, from the evaluation's own matching.

    Args:
        mip: ``(2, Y, X)`` nuclei/marker max projection of the stack, or None (unreadable stack: the predicted
            footprints are shown in grey instead, or black without ``labels``).
        stem: the stack's name, first in the header.
        pred: the predictions (``read_prediction_csv``): ``zyx`` ``(P, 3)``, ``label`` ``(P,)`` in {1, 2}, ``id``
            ``(P,)`` their ids in ``labels``.
        truth: ``(zyx (T, 3), labels (T,))`` the clicks.
        match: ``(pred_idx, true_idx)`` ``(K,)`` each, the matched rows (``match_nuclei``).
        scores: ``metrics.detection.scores`` of the stack (``np_*``, ``nc_*``, ``macro_f1`` are shown).
        labels: ``(Z, Y, X)`` predicted nucleus ids (``STEM_instances.tif``); None: predictions are drawn as small
            rings at their centroids instead of outlines.
        centre_z: ``(max id + 1,)`` centre slice of each id (the CSV's ``centre_slice``); needed with ``labels``.
        um_per_px: ``dx`` for the scale bar and the rings; radius_um: the matching radius (ring of a missed click).
        shape_yx: the field's ``(Y, X)`` when neither ``mip`` nor ``labels`` is given.
        note: said in the header (e.g. why the background is not the stack).
    """
    from ..visualize import composite_rgb

    pred_zyx = np.asarray(pred["zyx"], np.float64).reshape(-1, 3)
    pred_labels, pred_ids = np.asarray(pred["label"], np.int64), np.asarray(pred["id"], np.int64)
    true_zyx, true_labels = np.asarray(truth[0], np.float64).reshape(-1, 3), np.asarray(truth[1], np.int64)
    pred_idx, true_idx = (np.asarray(i, np.int64) for i in match)
    field = mip.shape[1:] if mip is not None else labels.shape[1:] if labels is not None else tuple(shape_yx)
    step = reduction_step(field, max_side)

    # per prediction: detection 1 matched / 2 false; class 1 right / 2 positive called negative / 3 the reverse
    detection = np.full(len(pred_labels), 2, np.uint8)
    detection[pred_idx] = 1
    call = np.zeros(len(pred_labels), np.uint8)
    truly = true_labels[true_idx]
    call[pred_idx] = np.where(pred_labels[pred_idx] == truly, 1, np.where(truly == 2, 2, 3))
    missed = np.ones(len(true_labels), bool)
    missed[true_idx] = False

    if mip is not None:
        background = composite_rgb(mip[0], mip[1])
    elif labels is not None:
        background = np.repeat(((labels > 0).any(0) * 90).astype(np.uint8)[..., None], 3, axis=-1)
    else:
        background = np.zeros((*field, 3), np.uint8)
    background = (downsampled(background, step) * 0.6).astype(np.uint8)  # dimmed: the marks are what matters
    detection_colours, call_colours = {1: AGREES, 2: FALSE}, {1: AGREES, 2: MISSED, 3: FALSE}
    left, right = background, background
    if labels is not None:
        lookup = np.zeros(int(max(pred_ids.max(initial=0), labels.max(initial=0))) + 1, np.uint8)
        for panel_codes, colours, side in ((detection, detection_colours, "left"), (call, call_colours, "right")):
            lookup[:] = 0
            lookup[pred_ids] = panel_codes
            drawn = paint(background, centre_outlines(labels, centre_z, lookup, step), colours)
            left, right = (drawn, right) if side == "left" else (left, drawn)
    ring_px = radius_um / um_per_px if um_per_px else 6.0
    if labels is None:  # no instances: each prediction as a ring of half the matching radius at its centroid
        centroid_radius = max(2.0, ring_px / (2 * step))
        for code, colour in detection_colours.items():
            left = draw_rings(left, pred_zyx[detection == code, 1:] / step, colour, centroid_radius)
        for code, colour in call_colours.items():
            right = draw_rings(right, pred_zyx[call == code, 1:] / step, colour, centroid_radius)
    left = draw_rings(left, true_zyx[missed, 1:] / step, MISSED, max(2.0, ring_px / step))

    n_match, n_false, n_missed = len(pred_idx), int((detection == 2).sum()), int(missed.sum())
    wrong_pos, wrong_neg = int((call == 3).sum()), int((call == 2).sum())
    s = scores
    header = [
        [(f"{stem}: {len(pred_labels)} predicted, {len(true_labels)} clicked - {n_match} matched, {n_missed} missed,"
          f" {n_false} false", TEXT)],
        [(f"detection P {_score(s['np_precision'])} R {_score(s['np_recall'])} F1 {_score(s['np_f1'])};  "
          f"marker-positive P {_score(s['nc_precision'])} R {_score(s['nc_recall'])} F1 {_score(s['nc_f1'])};  "
          f"macro F1 {_score(s['macro_f1'])}", TEXT)],
        [("left:", MUTED), *legend_line([(AGREES, f"matched {n_match}"),
                                         (MISSED, f"missed click {n_missed} (ring: {radius_um:g} um matching radius)"),
                                         (FALSE, f"false prediction {n_false}")])],
        [("right, matched:", MUTED), *legend_line([(AGREES, f"class right {n_match - wrong_pos - wrong_neg}"),
                                                   (MISSED, f"positive called negative {wrong_neg}"),
                                                   (FALSE, f"negative called positive {wrong_pos}")])],
    ]
    if labels is None:
        note = "; ".join(filter(None, [note, "predictions ringed at their centroids"]))
    if note:
        header.append([(note, MUTED)])
    return qc_figure([(left, "detection: predictions vs clicks"), (right, "marker class of the matched nuclei")],
                     header, um_per_px, step)
