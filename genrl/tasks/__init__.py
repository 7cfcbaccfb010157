"""Embedded tasks; importing this package registers them in ``genrl.registry.TASKS``."""

from genrl.tasks import digits  # noqa: F401
