"""Reward models; importing this package imports every module in it, which registers its rewards
in ``genrl.registry.REWARDS`` (a new file registers itself)."""

from genrl.registry import import_submodules

import_submodules(__name__)
