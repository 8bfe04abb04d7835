"""Intensity kernels shared by the transforms, the checks and the pictures: one percentile normalisation, and the
per-click brightness statistics of the input checks (numpy in, numpy out, vectorised over clicks)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "percentile_range",
    "normalize_percentiles",
    "local_mean_at",
    "local_median_at",
    "far_from_clicks",
    "slice_ranks",
    "sample_slices",
    "significant_foreground",
    "structure_fraction",
    "correlation_length",
]


def percentile_range(x, percentiles: Sequence[float] = (0.5, 99.8), axis: int | None = None) -> np.ndarray:
    """``(low, high)`` of ``x`` at two percentiles: shape ``(2,)`` for ``axis=None``, else the reduced shape plus a
    last axis of 2 (e.g. ``(C, 2)`` for ``x`` ``(C, N)`` and ``axis=1``). ``(0, 100)`` is the min-max range (the
    paper's 16 -> 8 bit rescaling), computed as min/max: exact and cheaper than a partition."""
    x = np.asarray(x)
    if x.dtype.kind not in "f":
        x = x.astype(np.float32)
    lo_pct, hi_pct = (float(p) for p in percentiles)
    if (lo_pct, hi_pct) == (0.0, 100.0):
        out = np.stack([x.min(axis=axis), x.max(axis=axis)])
    else:
        out = np.percentile(x, [lo_pct, hi_pct], axis=axis)
    return np.moveaxis(np.asarray(out), 0, -1)


def normalize_percentiles(x, percentiles: Sequence[float] = (0.5, 99.8), reference=None,
                          axis: int | None = None, clip: bool = True) -> np.ndarray:
    """``(x - low) / (high - low)`` as float32, clipped to [0, 1] unless ``clip=False``; ``(low, high)`` from
    :func:`percentile_range` of ``reference`` (default: ``x`` itself), per slice along ``axis`` when given (e.g.
    ``axis=1`` on ``(C, N)`` scales each channel on its own). A flat range counts as 1e-6 wide (no division by 0)."""
    x = np.asarray(x, dtype=np.float32)
    lo_hi = percentile_range(x if reference is None else reference, percentiles, axis)
    lo_hi = lo_hi.astype(np.float32)  # float32 arithmetic: a float64 range would double the memory of a stack
    lo, width = lo_hi[..., 0], np.maximum(lo_hi[..., 1] - lo_hi[..., 0], np.float32(1e-6))
    if axis is not None:  # broadcast the per-slice range back over the reduced axis
        lo, width = np.expand_dims(lo, axis), np.expand_dims(width, axis)
    out = (x - lo) / width
    return np.clip(out, 0, 1) if clip else out


def _disk_values(volume: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """``(N, disk)`` values of ``volume`` ``(Z, Y, X)`` in a disk of ``radius`` px around each point on its own slice
    (edge pixels repeat at the borders): one fancy index, never a loop over points."""
    r = int(radius)
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1].reshape(2, -1)
    disk = (dy**2 + dx**2) <= r * r
    dy, dx = dy[disk], dx[disk]
    points = np.asarray(points, int).reshape(-1, 3)
    ys = np.clip(points[:, 1:2] + dy, 0, volume.shape[1] - 1)
    xs = np.clip(points[:, 2:3] + dx, 0, volume.shape[2] - 1)
    return volume[points[:, :1], ys, xs].astype(np.float64)


def local_mean_at(volume: np.ndarray, points: np.ndarray, radius: int = 2) -> np.ndarray:
    """Mean of ``volume`` ``(Z, Y, X)`` over a disk of ``radius`` px around each point, on the point's own slice,
    ``(N,)``: the intensity an annotator saw under the click."""
    return _disk_values(volume, points, radius).mean(axis=1)


def local_median_at(volume: np.ndarray, points: np.ndarray, radius: int = 2) -> np.ndarray:
    """Median of ``volume`` ``(Z, Y, X)`` over a disk of ``radius`` px around each point, on its own slice, ``(N,)``:
    robust to texture under the click (a bright chromocentre or a dark nucleolus moves it little)."""
    return np.median(_disk_values(volume, points, radius), axis=1)


def far_from_clicks(points: np.ndarray, shape_yx: Sequence[int]) -> tuple[np.ndarray, float]:
    """The pixels of a ``(Y, X)`` plane far from every click, ``(mask, distance)``: farther than ``distance`` =
    half the median distance between neighbouring clicks in x/y (>= 3 px), about one nucleus radius when clicks
    sit on touching nuclei. What the clicks are not on: background between nuclei, and unclicked nuclei."""
    from scipy import ndimage
    from scipy.spatial import cKDTree

    yx = np.asarray(points, int).reshape(-1, 3)[:, 1:]
    spacing = float(np.median(cKDTree(yx).query(yx, k=2)[0][:, 1])) if len(yx) > 1 else 0.0
    distance = max(3.0, 0.5 * spacing)
    free = np.ones(tuple(shape_yx), bool)
    free[yx[:, 0], yx[:, 1]] = False
    return ndimage.distance_transform_edt(free) > distance, distance


def slice_ranks(volume: np.ndarray, z: np.ndarray, values: np.ndarray, max_samples: int = 1 << 16,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Rank (0..1) of each ``values[i]`` among the voxels of slice ``z[i]`` of ``volume`` ``(Z, Y, X)`` (only those
    inside ``mask`` ``(Y, X)`` when given): the share of them that is darker. Per slice, not per stack, so depth
    attenuation does not count as "dim". Each slice's reference is a regular subsample of at most ``max_samples``
    voxels (ranks to ~0.5 %); the loop runs over the clicked slices (at most Z), vectorised over their points."""
    z, values = np.asarray(z, int), np.asarray(values, np.float64)
    out = np.zeros(len(values))
    for s in np.unique(z):
        plane = volume[s].ravel() if mask is None else volume[s][mask]
        reference = np.sort(plane[:: max(1, plane.size // max_samples)].astype(np.float64))
        sel = z == s
        out[sel] = np.searchsorted(reference, values[sel], side="left") / reference.size
    return out


# -- image-only channel statistics (no clicks): which channel holds the nuclei -------------------------------------
def sample_slices(volume, max_slices: int = 64, max_yx: int = 512) -> np.ndarray:
    """At most ``max_slices`` evenly spaced slices of ``volume`` ``(Z, Y, X)``, each cut to its central
    ``max_yx`` x ``max_yx`` pixels, as float32: what the image-only channel statistics read (a bounded cost on large
    stacks; every slice of usual stacks, as the nuclei of a thin section may fill only two or three of them)."""
    v = np.asarray(volume)
    zs = np.unique(np.linspace(0, v.shape[0] - 1, min(v.shape[0], max_slices)).round().astype(np.int64))
    cut = [slice(max(0, (n - max_yx) // 2), max(0, (n - max_yx) // 2) + min(n, max_yx)) for n in v.shape[1:]]
    return v[zs][:, cut[0], cut[1]].astype(np.float32)


def significant_foreground(slices: np.ndarray, k: float = 5.0, sigma: float = 1.0) -> np.ndarray:
    """The bright structures of a channel ``(Z, Y, X)``: each slice smoothed in-plane (Gaussian ``sigma`` px), and
    the voxels above both Otsu's threshold of the whole and ``k`` noise standard deviations over its 5th percentile
    (the noise from neighbouring pixel differences, robust to structure). Scale-free: the same mask for 8 or 16 bit,
    bright or dim stacks; empty where the channel holds only noise (an empty marker)."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    x = np.asarray(slices, np.float32)
    noise = 1.4826 * float(np.median(np.abs(np.diff(x, axis=-1)))) / np.sqrt(2)
    smooth = ndimage.gaussian_filter(x, (0, sigma, sigma))
    if float(smooth.max()) == float(smooth.min()):
        return np.zeros(x.shape, bool)
    significant = float(np.percentile(smooth, 5)) + k * noise / (2 * np.sqrt(np.pi) * sigma)
    return smooth > max(float(threshold_otsu(smooth[:, ::2, ::2].ravel())), significant)


def structure_fraction(slices: np.ndarray, k: float = 6.0, sigma: float = 1.0) -> float:
    """Share of a channel's voxels ``(Z, Y, X)`` (smoothed in-plane by ``sigma`` px) brighter than its background
    (5th percentile) by ``k`` background standard deviations, the deviation read from the spread of the darker voxels
    (5th to 25th percentile, as of a normal distribution): about 0 (< 1e-4) for noise of any grain, smooth or with an
    illumination gradient; 0.025 or more for a channel of nuclei, even dim, noisy or dense ones."""
    from scipy import ndimage

    x = ndimage.gaussian_filter(np.asarray(slices, np.float32), (0, sigma, sigma))
    p5, p25 = (float(v) for v in np.percentile(x, [5, 25]))
    spread = max((p25 - p5) / (1.645 - 0.674), 1e-6 * max(abs(p5), 1.0))
    return float(np.count_nonzero(x > p5 + k * spread)) / x.size


def correlation_length(slices: np.ndarray, sigma: float = 1.0) -> float:
    """The in-plane size of a channel's structures, px: the distance at which the spatial autocorrelation of its
    slices ``(Z, Y, X)`` (each smoothed by ``sigma`` px, mean removed) falls to one half, interpolated between
    pixels. About a nucleus radius for a nuclear stain, even where nuclei touch (their brightness differs and dims at
    the rims); larger for a marker that fills cells or cytoplasm, or rings around nuclei."""
    from scipy import ndimage

    x = ndimage.gaussian_filter(np.asarray(slices, np.float32), (0, sigma, sigma))
    x = x - x.mean(axis=(1, 2), keepdims=True)
    spectrum = np.fft.rfft2(x)
    auto = np.fft.irfft2((spectrum * spectrum.conj()).real, s=x.shape[1:]).sum(axis=0)
    if auto[0, 0] <= 0:
        return 0.0
    auto = auto / auto[0, 0]
    ny, nx = auto.shape
    dy = np.minimum(np.arange(ny), ny - np.arange(ny))[:, None]
    dx = np.minimum(np.arange(nx), nx - np.arange(nx))[None]
    radius = np.rint(np.hypot(dy, dx)).astype(np.int64).ravel()
    profile = np.bincount(radius, auto.ravel()) / np.maximum(np.bincount(radius), 1)
    below = np.flatnonzero(profile < 0.5)
    if not below.size:
        return float(len(profile))
    r = int(below[0])  # profile[r - 1] >= 0.5 > profile[r]: interpolate the crossing
    return float(r - 1 + (profile[r - 1] - 0.5) / max(profile[r - 1] - profile[r], 1e-12))
