"""Reward models; importing this package registers them in ``genrl.registry.REWARDS``."""

from rewards import digits  # noqa: F401
from rewards import verifiable  # noqa: F401
from rewards import clip  # noqa: F401
from rewards import pickscore  # noqa: F401
from rewards import videoalign  # noqa: F401
from rewards import compressibility  # noqa: F401
