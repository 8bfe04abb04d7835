"""Networks: HoVer-Net with LECL's projection head on the type branch."""

from .hovernet_scl import EMBEDDING_KEY, ENCODER_PREFIXES, HoVerNetSCL, ProjectionHead, default_proj_dim, valid_widths

__all__ = ["HoVerNetSCL", "ProjectionHead", "EMBEDDING_KEY", "ENCODER_PREFIXES", "valid_widths", "default_proj_dim"]
