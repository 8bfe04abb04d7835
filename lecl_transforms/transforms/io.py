"""Writing inference results as MONAI transforms (MONAI keeps ``SaveImaged`` in ``transforms/io`` too).

:class:`SavePredictionsd` is the last step of the inference post-processing: it writes the per-stack files of
:func:`~lecl_transforms.data.prediction_writer.write_predictions` (CSV table, instance and class TIFFs, QC picture,
QuPath GeoJSON) and records their paths under ``d["pred_files"]``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from ..data.prediction_writer import write_predictions
from ..errors import input_error
from ..utils.names import stem_of
from ..utils.spacing import resolve_spacing
from .utils import as_numpy

__all__ = ["SavePredictions", "SavePredictionsd"]


class SavePredictions(Transform):
    """Write one stack's prediction files into ``output_dir``; returns their paths (keys ``csv``, ``instances``,
    ``classes``, ``qc``, ``geojson``).

    ``labels`` ``(Z, Y, X)`` (or ``(1, Z, Y, X)``) nucleus ids 1..M; ``table`` the per-nucleus columns (``id``, ``z``,
    ``y``, ``x``, ``label``, ``score``, ``z_start``, ``z_stop``, ``area_px``, ``positive_slices``); ``image``
    ``(2, Z, Y, X)`` the nuclei/marker stack as read (raw values: the CSV's intensity measurements are taken on it);
    ``spacing`` ``(dz, dy, dx)`` um or None; ``stem`` the output file stem; ``mip`` ``(2, Y, X)`` its projection
    (computed from ``image`` when not given).
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, output_dir: PathLike):
        self.output_dir = Path(output_dir)

    def __call__(self, labels, table: Mapping, image, spacing: Sequence[float] | None, stem: str, mip=None,
                 centre_slices=None) -> dict[str, Path]:
        image = as_numpy(image)
        mip = image.max(axis=1) if mip is None else as_numpy(mip, np.float32)
        return write_predictions(self.output_dir, stem, as_numpy(labels), table, spacing, mip, image=image,
                                 centre_slices=centre_slices)


class SavePredictionsd(MapTransform):
    """Dictionary twin of :class:`SavePredictions`.

    Reads ``d[nuclei_key]`` (an object with ``.table()`` -> the per-nucleus columns and ``.labels`` ``(Z, Y, X)``, e.g.
    :class:`~lecl_transforms.transforms.functional.link_slices.Nuclei3D`; ``d[labels_key]`` is used instead of
    ``.labels`` when present), ``d[image_key]`` ``(2, Z, Y, X)``: the nuclei/marker stack as the pipeline's
    preprocessing read it (``IFStackReader`` + channel pick, no normalisation), whose values the intensity
    measurements are taken on, ``d[mip_key]`` ``(2, Y, X)`` (the max projection of ``d[image_key]`` when absent), and
    from ``d[image_key].meta``: the stem of ``filename_or_obj`` and the voxel ``spacing`` ``(dz, dy, dx)``
    (``spacing_zyx`` of a 2D image; unknown spacing is written as pixels). Stores the written paths under
    ``d["pred_files"]``.
    """

    backend = SavePredictions.backend

    def __init__(self, output_dir: PathLike, labels_key: str = "labels3d", nuclei_key: str = "nuclei",
                 mip_key: str = "mip", image_key: str = "image"):
        super().__init__(keys=nuclei_key)
        self.labels_key, self.nuclei_key, self.mip_key, self.image_key = labels_key, nuclei_key, mip_key, image_key
        self.writer = SavePredictions(output_dir)

    @property
    def output_dir(self) -> Path:
        return self.writer.output_dir

    def _stem_and_spacing(self, d: Mapping) -> tuple[str, tuple[float, float, float] | None]:
        image = d.get(self.image_key)
        source = (getattr(image, "meta", None) or {}).get("filename_or_obj")
        if not source:
            raise input_error(f"SavePredictionsd: d['{self.image_key}']", "carries no file name (filename_or_obj)",
                              "load the stack with LoadImaged(reader=IFStackReader()) so its outputs can be named")
        return stem_of(source), resolve_spacing(image, required=False)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        nuclei = d[self.nuclei_key]
        stem, spacing = self._stem_and_spacing(d)
        labels = d[self.labels_key] if self.labels_key in d else nuclei.labels
        d["pred_files"] = self.writer(labels, nuclei.table(), d[self.image_key], spacing, stem, mip=d.get(self.mip_key))
        return d
