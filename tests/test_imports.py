"""Every genrl module imports on its own, first: ``import genrl.media`` as the first import failed on
a circular import (media -> tasks.rows -> the tasks package -> preference_data -> media)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHECK = """
import importlib, pkgutil, sys
import genrl
names = sorted(m.name for m in pkgutil.walk_packages(genrl.__path__, "genrl."))
failed = []
for name in names:
    for key in [k for k in sys.modules if k.split(".")[0] in ("genrl", "rewards", "pipelines")]:
        del sys.modules[key]  # ours only: each module is the first of the project to import
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{name}: {type(e).__name__}: {e}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_first_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    count, *failed = proc.stdout.strip().splitlines()
    assert int(count) > 50 and not failed, "\n".join(failed)
