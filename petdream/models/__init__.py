"""Loading models: base pipelines (Hub id or local folder), the tiny offline models,
device and dtype choice, and the profiles that tie them together."""

from petdream.models.device import pick_device, pick_dtype
from petdream.models.pipeline import load_pipeline
from petdream.models.profiles import TINY_WARNING, Profile, resolve_profile

__all__ = ["Profile", "TINY_WARNING", "load_pipeline", "pick_device", "pick_dtype", "resolve_profile"]
