"""Tasks (embedded ones, and ``vlm_data`` and ``prompts`` for local files); importing this package registers
them in ``genrl.registry.TASKS``."""

from genrl.tasks import digits  # noqa: F401
from genrl.tasks import digit_sum  # noqa: F401
from genrl.tasks import vlm_data  # noqa: F401
from genrl.tasks import prompts  # noqa: F401
