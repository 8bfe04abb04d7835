"""Synthetic 3D immunofluorescence stacks with ground truth: the project's built-in data.

Each stack has a nuclei channel (textured ellipsoids that touch their neighbours) and a marker channel reproducing the
two situations LECL is about:

* a **positive** nucleus overlaps the marker in at least one, but not all, of its own z-slices;
* a **decoy** negative nucleus has marker at the same (y, x) but only in slices *outside* its own z-range: under a
  plain maximum-intensity projection it looks positive, under EMIP it does not.

Two regimes: ``clean`` (sparse, 2x anisotropy, little haze) and ``dense`` (nuclei cover most of the middle slices,
out-of-focus haze above and below each nucleus, 4.5x anisotropy) as in real confocal stacks of tissue.

Everything is drawn from ``numpy.random.default_rng([seed, index])``: one seed gives identical files, and an image
does not depend on how many others are generated with it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .points import NEGATIVE, POSITIVE

__all__ = [
    "SynthConfig",
    "SyntheticStack",
    "REGIMES",
    "generate_stack",
]


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of the generator. Lengths are in micrometres unless the name says px or slices."""

    size_yx: int = 256
    z_slices: tuple[int, int] = (8, 13)  # number of slices drawn per image in [lo, hi]
    pixel_size: float = 0.5
    anisotropy: float = 2.0  # z-step / pixel size
    nucleus_radius_xy: tuple[float, float] = (3.0, 4.5)
    nucleus_radius_z: tuple[float, float] = (2.2, 3.2)  # half-height
    elongation: float = 0.25  # max relative difference of the two in-plane semi-axes
    density: float = 0.0035  # nuclei per um^2 of the x/y field
    slab_thickness: float | None = None  # depth range of nucleus centres (tissue section, centred); None: whole stack
    min_separation: float = 0.85  # normalised centre distance; < 1 lets neighbours press into each other
    positive_fraction: float = 0.4
    decoy_fraction: float = 0.5  # share of the negatives (with room above/below) that get a decoy marker
    decoy_gap: int = 1  # empty slices between a nucleus and its decoy
    marker_ring: float = 1.0  # cytoplasm thickness around the nucleus covered by the marker
    marker_clutter: int = 6  # marker blobs away from any nucleus
    psf_sigma_xy: float = 0.25
    psf_sigma_z: float = 0.6
    haze: float = 0.0  # share of the light spread out of focus (above/below the nucleus)
    haze_sigma_xy: float = 1.5
    haze_sigma_z: float = 3.0
    background: float = 0.06
    photons: float = 250.0  # expected counts at intensity 1 (Poisson noise)
    read_noise: float = 3.0  # camera read noise, counts
    camera_offset: int = 100
    point_jitter_px: float = 0.0  # annotator's click error in x/y (standard deviation, px; kept on the nucleus)
    z_click_error: float = 0.0  # probability that the click lands one slice off the centre slice
    missed_click_rate: float = 0.0  # probability that a nucleus gets no click

    @property
    def z_step(self) -> float:
        return self.pixel_size * self.anisotropy

    def spacing(self) -> tuple[float, float, float]:
        return (self.z_step, self.pixel_size, self.pixel_size)


#: named presets; ``dense`` is the hard regime of real stacks (dense, hazy, strongly anisotropic)
REGIMES: dict[str, SynthConfig] = {
    "clean": SynthConfig(),
    "dense": SynthConfig(
        anisotropy=4.5,
        nucleus_radius_xy=(3.2, 4.4),
        nucleus_radius_z=(2.8, 3.8),
        density=0.025,
        slab_thickness=4.0,
        min_separation=0.75,
        decoy_fraction=0.35,
        haze=0.5,
        psf_sigma_z=1.2,
        photons=150.0,
        background=0.08,
    ),
}


@dataclass
class SyntheticStack:
    """One generated stack and its ground truth (all arrays in (Z, Y, X) order, image (2, Z, Y, X))."""

    image: np.ndarray  # uint16 (2, Z, Y, X): 0 nuclei, 1 marker (camera counts)
    instances: np.ndarray  # uint16 (Z, Y, X), 0 background, i = nucleus i
    marker_mask: np.ndarray  # bool (Z, Y, X), noise-free marker extent
    nuclei: list[dict]  # per nucleus: id, label, z_start, z_stop, centre, click, decoy, annotated
    spacing: tuple[float, float, float]
    config: SynthConfig = field(repr=False)

    def points(self) -> np.ndarray:
        """The annotator's clicks as an (N, 4) int array ``z, y, x, label`` (annotated nuclei only)."""
        rows = [[n["z"], n["y"], n["x"], n["label"]] for n in self.nuclei if n["annotated"]]
        return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


# -- geometry ----------------------------------------------------------------------------------------------------------
def _place_nuclei(cfg: SynthConfig, rng: np.random.Generator, n_z: int):
    """Rejection-sample nucleus centres and radii: neighbours may touch but not sit inside each other."""
    field_um = cfg.size_yx * cfg.pixel_size
    target = int(round(cfg.density * field_um**2))
    depth = (n_z - 1) * cfg.z_step
    slab = depth if cfg.slab_thickness is None else min(cfg.slab_thickness, depth)
    centres, radii = np.zeros((0, 3)), np.zeros((0, 2))  # (cz, cy, cx) um; (r_z, r_xy) um
    tries = 0
    while len(centres) < target and tries < 60 * target:
        tries += 1
        r_xy = rng.uniform(*cfg.nucleus_radius_xy)
        r_z = rng.uniform(*cfg.nucleus_radius_z)
        # the centre stays at least 0.6 half-heights inside the stack so every nucleus has a centre slice
        lo = max(0.6 * r_z, depth / 2 - slab / 2)
        hi = min(depth - 0.6 * r_z, depth / 2 + slab / 2)
        c = np.array([rng.uniform(lo, max(lo, hi)), *rng.uniform(r_xy * 0.3, field_um - r_xy * 0.3, 2)])
        if len(centres):
            dz = (centres[:, 0] - c[0]) / (radii[:, 0] + r_z)
            dxy = np.hypot(*(centres[:, 1:] - c[1:]).T) / (radii[:, 1] + r_xy)
            if np.min(np.hypot(dz, dxy)) < cfg.min_separation:
                continue
        centres = np.vstack([centres, c])
        radii = np.vstack([radii, [r_z, r_xy]])
    return centres, radii


def _render_nuclei(cfg: SynthConfig, rng: np.random.Generator, shape, centres, radii):
    """Instance volume and normalised radius map. Each voxel goes to the nucleus it is deepest inside."""
    n_z, n_y, n_x = shape
    inst = np.zeros(shape, np.uint16)
    best_r = np.full(shape, np.inf, np.float32)
    zs, px = cfg.z_step, cfg.pixel_size
    for i, ((cz, cy, cx), (r_z, r_xy)) in enumerate(zip(centres, radii), start=1):
        theta = rng.uniform(0, np.pi)
        e = rng.uniform(0, cfg.elongation)
        ra, rb = r_xy * (1 + e / 2), r_xy * (1 - e / 2)
        wobble_amp, wobble_k, wobble_phase = rng.uniform(0, 0.06), rng.integers(2, 5), rng.uniform(0, 2 * np.pi)
        z0, z1 = max(0, int(np.floor((cz - r_z) / zs))), min(n_z, int(np.ceil((cz + r_z) / zs)) + 1)
        y0, y1 = max(0, int((cy - ra) / px) - 1), min(n_y, int((cy + ra) / px) + 2)
        x0, x1 = max(0, int((cx - ra) / px) - 1), min(n_x, int((cx + ra) / px) + 2)
        z, y, x = np.ogrid[z0:z1, y0:y1, x0:x1]
        dz, dy, dx = z * zs - cz, y * px - cy, x * px - cx
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        wobble = 1 + wobble_amp * np.sin(wobble_k * np.arctan2(v, u) + wobble_phase)
        r = np.sqrt((dz / r_z) ** 2 + ((u / ra) ** 2 + (v / rb) ** 2) / wobble**2).astype(np.float32)
        box = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        take = (r < 1) & (r < best_r[box])
        inst[box][take] = i
        best_r[box][take] = r[take]
    # an expert sees no nucleus in a slice that holds only its tip: drop slices with < 10 % of its largest area
    area = _area_table(inst, len(centres))
    tip = area < 0.1 * area.max(axis=1, keepdims=True)
    tip[0] = False
    inst[tip[inst, np.arange(n_z)[:, None, None]]] = 0
    return inst, best_r


def _area_table(inst: np.ndarray, n: int) -> np.ndarray:
    """Voxels of each label per slice, ``(n + 1, Z)`` (row 0: background), from the instance volume in one pass."""
    n_z = inst.shape[0]
    code = inst.astype(np.int64) * n_z + np.arange(n_z)[:, None, None]
    return np.bincount(code.ravel(), minlength=(n + 1) * n_z).reshape(n + 1, n_z)


def _smooth_noise(rng, shape, sigma, mean=1.0, sd=0.2):
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    # centre before scaling: a wide sigma on a small image leaves a mean offset that the scaling would blow up
    # (an illumination field far from 1, even negative, that wipes the nuclei out)
    field_ -= field_.mean()
    field_ *= sd / (field_.std() + 1e-8)
    return field_ + mean


def _footprint_ring(mask2d: np.ndarray, ring_px: float) -> np.ndarray:
    """Pixels within ``ring_px`` of a 2D mask (the mask itself included)."""
    if ring_px <= 0:
        return mask2d
    return ndimage.distance_transform_edt(~mask2d) <= ring_px


def _bbox2d(mask2d: np.ndarray, pad: int, shape) -> tuple[slice, slice]:
    ys, xs = np.nonzero(mask2d)
    return (slice(max(0, ys.min() - pad), min(shape[0], ys.max() + pad + 1)),
            slice(max(0, xs.min() - pad), min(shape[1], xs.max() + pad + 1)))


# -- the generator -----------------------------------------------------------------------------------------------------
def generate_stack(cfg: SynthConfig = SynthConfig(), seed: int = 0, index: int = 0) -> SyntheticStack:
    """Generate one stack and its ground truth, deterministically for ``(seed, index)``."""
    rng = np.random.default_rng([seed, index])
    n_z = int(rng.integers(cfg.z_slices[0], cfg.z_slices[1] + 1))
    shape = (n_z, cfg.size_yx, cfg.size_yx)
    centres, radii = _place_nuclei(cfg, rng, n_z)
    inst, best_r = _render_nuclei(cfg, rng, shape, centres, radii)
    n = len(centres)
    ids = np.arange(1, n + 1)

    # per nucleus z-range and largest cross-section (vectorised over nuclei by a (nucleus, z) area table)
    area = _area_table(inst, n)[1:]
    present = area > 0
    alive = present.any(axis=1)
    z_start = np.where(alive, present.argmax(axis=1), -1)
    z_stop = np.where(alive, n_z - 1 - present[:, ::-1].argmax(axis=1), -1)
    # centre slice = largest cross-section, ties broken towards the geometric centre
    closeness = -np.abs(np.arange(n_z)[None] - centres[:, :1] / cfg.z_step) * 1e-3
    centre_z = np.argmax(area + closeness, axis=1)

    boxes = ndimage.find_objects(inst, max_label=n)
    ring_px = cfg.marker_ring / cfg.pixel_size
    marker_mask = np.zeros(shape, bool)
    label = np.full(n, NEGATIVE)
    decoy = np.zeros(n, bool)
    marker_range = np.full((n, 2), -1)

    # positives: marker over a contiguous run of 1..(n_slices - 1) of their own slices
    n_slices = z_stop - z_start + 1
    candidates = np.flatnonzero(alive & (n_slices >= 2))
    positives = rng.permutation(candidates)[: int(round(cfg.positive_fraction * alive.sum()))]
    for j in positives:
        run = int(rng.integers(1, n_slices[j]))
        first = int(rng.integers(z_start[j], z_stop[j] - run + 2))
        own = inst[first:first + run] == j + 1
        footprint = own.any(axis=0)
        ys, xs = _bbox2d(footprint, int(ring_px) + 2, shape[1:])
        for k in range(run):
            zz = first + k
            if not own[k].any():
                continue
            region = _footprint_ring(own[k][ys, xs], ring_px) & ((inst[zz, ys, xs] == 0) | (inst[zz, ys, xs] == j + 1))
            marker_mask[zz, ys, xs] |= region
        label[j] = POSITIVE
        marker_range[j] = (first, first + run - 1)

    # decoys: negatives with marker at their (y, x) but only in slices outside their own z-range
    negatives = rng.permutation(np.setdiff1d(np.flatnonzero(alive), positives))
    n_decoys = int(round(cfg.decoy_fraction * len(negatives)))
    for j in negatives:
        if decoy.sum() >= n_decoys:
            break
        thick = int(rng.integers(1, 3))
        above = (z_stop[j] + 1 + cfg.decoy_gap, z_stop[j] + cfg.decoy_gap + thick)
        below = (z_start[j] - cfg.decoy_gap - thick, z_start[j] - 1 - cfg.decoy_gap)
        sides = [s for s in (above, below) if s[0] >= 0 and s[1] < n_z]
        if not sides:
            continue
        lo, hi = sides[int(rng.integers(len(sides)))]
        box = boxes[j]
        footprint = (inst[box] == j + 1).any(axis=0)
        full = np.zeros(shape[1:], bool)
        full[box[1:]] = footprint
        ys, xs = _bbox2d(full, int(ring_px) + 2, shape[1:])
        region2d = _footprint_ring(full[ys, xs], ring_px)
        free = inst[lo:hi + 1, ys, xs] == 0  # never put marker into another nucleus
        region = region2d[None] & free
        inside = (region & full[ys, xs][None]).sum(axis=(1, 2))
        if inside.max() < 0.6 * footprint.sum():
            continue  # another nucleus sits above/below: no room for a visible decoy
        marker_mask[lo:hi + 1, ys, xs] |= region
        decoy[j] = True
        marker_range[j] = (lo, hi)

    # clutter: marker-positive debris away from nuclei
    for _ in range(cfg.marker_clutter):
        zc, yc, xc = rng.integers(0, n_z), *rng.integers(0, cfg.size_yx, 2)
        rr = rng.uniform(2, 5)
        n_yx = cfg.size_yx
        ys = slice(max(0, int(yc - rr)), min(n_yx, int(yc + rr) + 1))
        xs = slice(max(0, int(xc - rr)), min(n_yx, int(xc + rr) + 1))
        yy, xx = np.ogrid[ys, xs]
        blob = ((yy - yc) ** 2 + (xx - xc) ** 2 <= rr**2) & (inst[zc, ys, xs] == 0)
        marker_mask[zc, ys, xs] |= blob

    # ground-truth class from the masks themselves: positive iff the marker overlaps the nucleus in 3D
    overlap = np.bincount(inst[marker_mask].astype(np.int64), minlength=n + 1)[1:]
    assert np.array_equal(overlap > 0, label == POSITIVE), "generator bug: marker class mismatch"

    image = _form_image(cfg, rng, inst, best_r, marker_mask, n)
    nuclei = _annotate(cfg, rng, inst, centres, centre_z, ids, alive, label, z_start, z_stop, decoy, marker_range)
    return SyntheticStack(image, inst, marker_mask, nuclei, cfg.spacing(), cfg)


def _form_image(cfg, rng, inst, best_r, marker_mask, n):
    """Noise-free signal -> PSF blur + out-of-focus haze -> background -> Poisson + read noise -> uint16 counts."""
    shape = inst.shape
    zs, px = cfg.z_step, cfg.pixel_size
    brightness = np.concatenate([[0.0], rng.uniform(0.6, 1.0, n)]).astype(np.float32)
    chromatin = _smooth_noise(rng, shape, (0.5, 1.2, 1.2), sd=0.18)
    r = np.where(inst > 0, best_r, 1.0)
    nuclei = brightness[inst] * chromatin * (1 - 0.3 * r**2) * (inst > 0)
    marker_tex = _smooth_noise(rng, shape, (0.5, 2.0, 2.0), sd=0.15)
    marker = marker_mask * rng.uniform(0.7, 0.9) * marker_tex
    psf = (cfg.psf_sigma_z / zs, cfg.psf_sigma_xy / px, cfg.psf_sigma_xy / px)
    haze_sigma = (cfg.haze_sigma_z / zs, cfg.haze_sigma_xy / px, cfg.haze_sigma_xy / px)
    illumination = _smooth_noise(rng, shape[1:], 40, mean=1.0, sd=0.15)
    channels = []
    for clean, bg in ((nuclei, cfg.background), (marker, 0.6 * cfg.background)):
        signal = ndimage.gaussian_filter(clean.astype(np.float32), psf)
        if cfg.haze > 0:
            haze = ndimage.gaussian_filter(clean.astype(np.float32), haze_sigma)
            signal = (1 - cfg.haze) * signal + cfg.haze * haze * 2.0  # haze is spread wide: keep its total visible
        signal = (signal + bg) * illumination
        counts = rng.poisson(np.clip(signal, 0, None) * cfg.photons).astype(np.float32)
        counts += rng.normal(cfg.camera_offset, cfg.read_noise, shape).astype(np.float32)
        channels.append(np.clip(np.rint(counts), 0, 65535).astype(np.uint16))
    return np.stack(channels)


def _onto_own_pixels(inst, boxes, click, ids, alive, fallback=None):
    """``click`` with every row that is not on a pixel of its own nucleus ``ids[j]`` moved to the nearest such pixel
    on its slice (searched in the nucleus' bounding box only); where that slice holds none, the ``fallback`` row."""
    click = click.copy()
    for j in np.flatnonzero(alive & (inst[tuple(click.T)] != ids)):
        _, box_y, box_x = boxes[ids[j] - 1]
        ys, xs = np.nonzero(inst[click[j, 0], box_y, box_x] == ids[j])
        if ys.size == 0:
            click[j] = fallback[j]
            continue
        k = np.argmin((ys + box_y.start - click[j, 1]) ** 2 + (xs + box_x.start - click[j, 2]) ** 2)
        click[j, 1:] = ys[k] + box_y.start, xs[k] + box_x.start
    return click


def _annotate(cfg, rng, inst, centres, centre_z, ids, alive, label, z_start, z_stop, decoy, marker_range):
    """The annotator's click per nucleus: centre slice, nearest own pixel to the centre, optional errors."""
    n_z, n_y, n_x = inst.shape
    cy = np.clip(np.rint(centres[:, 1] / cfg.pixel_size), 0, n_y - 1).astype(int)
    cx = np.clip(np.rint(centres[:, 2] / cfg.pixel_size), 0, n_x - 1).astype(int)
    boxes = ndimage.find_objects(inst, max_label=int(ids.max(initial=0)))
    # where a neighbour owns the centre pixel, move the click to the nearest pixel of this nucleus on that slice
    click = _onto_own_pixels(inst, boxes, np.stack([centre_z, cy, cx], axis=1), ids, alive)
    cy, cx = click[:, 1].copy(), click[:, 2].copy()
    if cfg.point_jitter_px > 0 or cfg.z_click_error > 0:
        jitter = np.zeros_like(click)
        jitter[:, 1:] = np.rint(rng.normal(0, cfg.point_jitter_px, (len(ids), 2))).astype(int)
        jitter[:, 0] = (rng.random(len(ids)) < cfg.z_click_error) * rng.choice([-1, 1], len(ids))
        moved = np.clip(click + jitter, 0, np.array(inst.shape) - 1)
        # a slice error stays within the nucleus' slices; an x/y error that leaves the nucleus lands on its nearest
        # own pixel (an annotator clicks inside the nucleus, off-centre)
        moved[:, 0] = np.where((moved[:, 0] >= z_start) & (moved[:, 0] <= z_stop), moved[:, 0], click[:, 0])
        click = _onto_own_pixels(inst, boxes, moved, ids, alive, fallback=click)
    annotated = alive & (rng.random(len(ids)) >= cfg.missed_click_rate)
    # two clicks on one voxel cannot happen for distinct nuclei (each voxel has one owner)
    return [
        {
            "id": int(ids[j]), "z": int(click[j, 0]), "y": int(click[j, 1]), "x": int(click[j, 2]),
            "label": int(label[j]), "z_start": int(z_start[j]), "z_stop": int(z_stop[j]),
            "centre_z": int(centre_z[j]), "centre_y": int(cy[j]), "centre_x": int(cx[j]),
            "decoy": int(decoy[j]), "annotated": int(annotated[j]),
            "marker_z_start": int(marker_range[j, 0]), "marker_z_stop": int(marker_range[j, 1]),
        }
        for j in np.flatnonzero(alive)
    ]
