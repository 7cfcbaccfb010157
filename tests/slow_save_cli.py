"""genrl's CLI with every ``torch.save`` slowed by 0.3 s after it wrote, so that checkpoint writes last long
enough to be killed in: the fault injector of tests/test_kill_resume.py (results are unaffected). A file
rather than ``python -c`` so that ``accelerate launch`` can start it on every process."""

import sys
import time

import torch

_save = torch.save
torch.save = lambda *a, **k: (_save(*a, **k), time.sleep(0.3))[0]

from genrl.cli import main  # noqa: E402  (after the patch)

sys.exit(main())
