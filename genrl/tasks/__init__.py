"""Tasks (embedded ones, and ``vlm_data`` and ``prompts`` for local files); importing this package
imports every module in it, which registers its tasks in ``genrl.registry.TASKS``."""

from genrl.registry import import_submodules

import_submodules(__name__)
