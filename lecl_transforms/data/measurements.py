"""Per-nucleus measurements of a predicted stack, from its 3D nucleus ids and the stack's own (raw) channel values.

=============================  ========================================================================================
column                         meaning
=============================  ========================================================================================
``n_slices``                   slices the nucleus occupies (slices holding at least one of its voxels)
``centre_slice``               the nucleus' centre slice: the slice where its footprint is largest (first on ties);
                               the slice it is outlined on in the QC picture and the QuPath GeoJSON
``volume_voxels``              voxels of the nucleus
``volume_um3``                 ``volume_voxels * dz * dy * dx`` in um^3; NaN (an empty CSV cell) when the spacing is
                               unknown
``nuclei_mean`` / ``_max``     mean / largest nuclei-channel value over the nucleus' 3D voxels (raw stack values)
``nuclei_integrated``          sum of the nuclei-channel values over those voxels (raw value x voxels)
``marker_mean`` / ``_max``     the same for the marker channel
``marker_integrated``
``marker_mean_centre_slice``   mean marker value over the nucleus' voxels on its centre slice only
=============================  ========================================================================================

Everything is a labelled reduction (``np.bincount``, :func:`scipy.ndimage.maximum`) slice by slice: one pass over the
volume, no loop over nuclei, memory O(Y * X + M).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["nucleus_measurements", "MEASUREMENT_COLUMNS", "CHANNEL_NAMES"]

#: names of the two channels of the ``(2, Z, Y, X)`` stack, in order
CHANNEL_NAMES = ("nuclei", "marker")

#: the columns :func:`nucleus_measurements` returns, in order
MEASUREMENT_COLUMNS = (
    "n_slices", "centre_slice", "volume_voxels", "volume_um3",
    "nuclei_mean", "nuclei_max", "nuclei_integrated",
    "marker_mean", "marker_max", "marker_integrated", "marker_mean_centre_slice",
)


def nucleus_measurements(labels: np.ndarray, image: np.ndarray, centre_z: np.ndarray,
                         spacing: Sequence[float] | None) -> dict[str, np.ndarray]:
    """The :data:`MEASUREMENT_COLUMNS` of nuclei 1..M (module docstring), each ``(M,)`` in id order.

    Args:
        labels: ``(Z, Y, X)`` int nucleus ids 0 (background), 1..M; every id 1..M has at least one voxel.
        image: ``(2, Z, Y, X)`` nuclei (0) and marker (1) values of the same stack, as read (not normalised).
        centre_z: ``(M + 1,)`` the centre slice of each id (entry 0 unused).
        spacing: ``(dz, dy, dx)`` um, or None when unknown (``volume_um3`` is then NaN).
    """
    n = len(centre_z) - 1
    size = n + 1
    voxels = np.zeros(size, np.int64)
    n_slices = np.zeros(size, np.int64)
    sums = np.zeros((2, size))
    maxima = np.full((2, size), -np.inf)
    centre_sum, centre_count = np.zeros(size), np.zeros(size, np.int64)
    for z, plane in enumerate(labels):
        inside = plane > 0
        ids = plane[inside].astype(np.intp, copy=False)  # nucleus voxels of this slice only
        if not len(ids):
            continue
        count = np.bincount(ids, minlength=size)
        voxels += count
        present = np.flatnonzero(count)
        n_slices[present] += 1
        on_centre = centre_z[ids] == z
        for c in range(2):
            values = np.asarray(image[c, z][inside], np.float64)
            sums[c] += np.bincount(ids, weights=values, minlength=size)
            maxima[c, present] = np.maximum(maxima[c, present], ndimage.maximum(values, ids, present))
            if c == 1:
                centre_sum += np.bincount(ids[on_centre], weights=values[on_centre], minlength=size)
        centre_count += np.bincount(ids[on_centre], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):  # only ids without voxels, which the caller refuses
        means = sums / voxels
        centre_mean = centre_sum / centre_count
    volume_um3 = voxels * float(np.prod(spacing)) if spacing is not None else np.full(size, np.nan)
    columns = {"n_slices": n_slices, "centre_slice": np.asarray(centre_z, np.int64), "volume_voxels": voxels,
               "volume_um3": volume_um3}
    for c, name in enumerate(CHANNEL_NAMES):
        columns.update({f"{name}_mean": means[c], f"{name}_max": maxima[c], f"{name}_integrated": sums[c]})
    columns["marker_mean_centre_slice"] = centre_mean
    return {key: np.asarray(columns[key])[1:] for key in MEASUREMENT_COLUMNS}
