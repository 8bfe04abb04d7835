"""The per-stack inference pipeline (method step 4), declared once in the bundle's ``inference.json`` and used by
every caller: ``lecl predict`` and ``python -m monai.bundle run inference`` (through :class:`StackPredictor`), the
training's validation through the inference path that picks ``model.pt`` (:class:`StackValidator`), and MONAI Label
(which runs ``inference.json``).

    stack file --preprocessing--> image (2, Z, Y, X) + mip --inferer--> per-slice instances, classes, scores
               --link--> 3D nuclei (table, labels)

``inference.json`` declares the three pieces (``preprocessing``, ``inferer``, ``link``) with their settings, and
:class:`StackPipeline` chains them. :meth:`StackPipeline.from_config` builds the same pipeline from that file for a
network that is not a checkpoint on disk (the network being trained), so a value edited in ``inference.json`` is
what validation uses too."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["StackPipeline", "PIPELINE_KEYS"]

#: the ids of ``inference.json`` that make the pipeline
PIPELINE_KEYS = ("preprocessing", "inferer", "link")


class StackPipeline:
    """One stack from its file to its 3D nuclei: ``preprocessing`` -> ``inferer`` -> ``link``.

    Args:
        preprocessing: ``{"image": path}`` -> ``image`` ``(2, Z, Y, X)`` (nuclei, marker, with the stack's metadata)
            and ``mip`` ``(2, Y, X)`` (``inference.json``: reader, channel pick, MIP).
        inferer: ``(image, network)`` -> ``instances``, ``slice_class``, ``slice_score``, ``timing`` (the per-slice
            :class:`~lecl_transforms.inferers.SliceHoVerNetInferer`).
        link: the 3D integration (:class:`~lecl_transforms.transforms.LinkSlicesd`): adds ``nuclei`` (the
            per-nucleus table), ``labels3d`` and ``classes3d``.
    """

    def __init__(self, preprocessing: Callable, inferer: Callable, link: Callable):
        self.preprocessing, self.inferer, self.link = preprocessing, inferer, link

    def load(self, image) -> dict:
        """The stack read and its channels picked (validation keeps this in memory between evaluations)."""
        return self.preprocessing({"image": image})

    def predict(self, data: Mapping, network: torch.nn.Module) -> dict:
        """Per-slice inference and 3D linking of a loaded stack (``data`` from :meth:`load`; not modified)."""
        d = dict(data)
        d.update(self.inferer(d["image"], network))
        return self.link(d)

    def network_outputs(self, data: Mapping, network: torch.nn.Module):
        """The network's outputs for every slice of a loaded stack, kept for :meth:`detect_from` with other
        post-processing settings (the inferer's ``network_outputs``)."""
        return self.inferer.network_outputs(data["image"], network)

    def detect_from(self, data: Mapping, outputs, postprocess: Callable | None = None) -> dict:
        """The per-slice detections of :meth:`predict` from kept network ``outputs``, post-processed by
        ``postprocess`` (default: the pipeline's own), not yet linked (``self.link``, or a copy with other settings,
        links them: calibration tries several settings on one network run)."""
        d = dict(data)
        d.update(self.inferer.detect(outputs, postprocess))
        return d

    def __call__(self, image, network: torch.nn.Module) -> dict:
        return self.predict(self.load(image), network)

    @classmethod
    def from_config(cls, config_file: str | os.PathLike, model_description: Any,
                    overrides: Mapping[str, Any] | None = None) -> StackPipeline:
        """The pipeline ``config_file`` (the bundle's ``inference.json``) declares, for the network
        ``model_description`` describes (its patch size and channel composite; no checkpoint file is read), with
        ``overrides`` of its keys (e.g. the training's channels and spacing)."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(str(config_file))
        parser.update(dict(overrides or {}))
        parser["model_description"] = model_description
        return cls(*(parser.get_parsed_content(key) for key in PIPELINE_KEYS))
