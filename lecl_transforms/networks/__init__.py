"""Networks: HoVer-Net with LECL's projection head on the type branch, and checkpoints that describe themselves."""

from .hovernet_scl import EMBEDDING_KEY, ENCODER_PREFIXES, HoVerNetSCL, ProjectionHead, default_proj_dim, valid_widths
from .model_io import DESCRIPTION_KEY, MODEL_KEY, ModelDescription, load_model, load_weights, read_model_description

from .placement import on_device

__all__ = ["on_device", "HoVerNetSCL", "ProjectionHead", "EMBEDDING_KEY", "ENCODER_PREFIXES", "valid_widths", "default_proj_dim",
           "ModelDescription", "load_model", "load_weights", "read_model_description", "DESCRIPTION_KEY", "MODEL_KEY"]
