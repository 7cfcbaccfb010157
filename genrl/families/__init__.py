"""Model families: how the flow policy drives each diffusers pipeline (``genrl.families.base``).

Registered by name in ``genrl.registry.FAMILIES``; ``policy.family: auto`` picks by pipeline
class. Every module of this package but ``base`` defines families and is imported here."""

from genrl.registry import import_submodules

import_submodules(__name__, skip=("base",))
