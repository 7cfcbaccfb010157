"""Reward models; importing this package registers them in ``genrl.registry.REWARDS``."""

from rewards import digits  # noqa: F401
from rewards import verifiable  # noqa: F401
