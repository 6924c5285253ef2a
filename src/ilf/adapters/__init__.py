"""Backbone adapters, registered by model class."""

from . import dit, flux, pixart, sana, sd3  # noqa: F401  (registration)
from . import hunyuan_video15, wan  # noqa: F401  (video families)
from . import flux2, qwen_image, z_image  # noqa: F401  (image families)
from .base import BackboneAdapter, get_adapter, register_adapter, supported_classes

__all__ = ["BackboneAdapter", "get_adapter", "register_adapter", "supported_classes"]
