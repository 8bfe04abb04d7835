"""Networks: HoVer-Net with LECL's projection head on the type branch, and checkpoints that describe themselves."""

from .hovernet_scl import (ARCHITECTURE_KEYS, EMBEDDING_KEY, ENCODER_PREFIXES, EXTRA_STATE_KEY, HoVerNetSCL,
                           ProjectionHead, decode_description, default_proj_dim, encode_description, valid_widths)
from .model_io import (DESCRIPTION_KEY, MODEL_KEY, TRAINING_KEYS, ModelDescription, convert_checkpoint, load_model,
                       load_weights, read_model_description, save_model, update_description)
from .placement import on_device, unwrap_parallel

__all__ = ["on_device", "unwrap_parallel", "HoVerNetSCL", "ProjectionHead", "EMBEDDING_KEY", "ENCODER_PREFIXES",
           "EXTRA_STATE_KEY", "ARCHITECTURE_KEYS", "valid_widths", "default_proj_dim", "encode_description",
           "decode_description", "ModelDescription", "load_model", "load_weights", "read_model_description",
           "save_model", "convert_checkpoint", "update_description", "DESCRIPTION_KEY", "MODEL_KEY", "TRAINING_KEYS"]
