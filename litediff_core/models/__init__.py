"""Base models: the one loader (embedded / hub / folder), saving, the embedded architectures
and the Fashion-MNIST feature classifier."""

from .embedded import DEFAULT_EMBEDDED, EMBEDDED, cifar10_ddpm_config, fashion_unet_config
from .io import save_model
from .loader import BaseModel, ModelMeta, load_base, parse_source, read_meta

__all__ = ["BaseModel", "DEFAULT_EMBEDDED", "EMBEDDED", "ModelMeta", "cifar10_ddpm_config",
           "fashion_unet_config", "load_base", "parse_source", "read_meta",
           "save_model"]
