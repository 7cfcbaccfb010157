"""Model families: how the flow policy drives each diffusers pipeline (``genrl.families.base``).

Registered by name in ``genrl.registry.FAMILIES``; ``policy.family: auto`` picks by pipeline
class. Every module of this package but ``base`` defines families and is imported here."""

import importlib
import pkgutil

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")
