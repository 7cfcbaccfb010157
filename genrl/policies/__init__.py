"""Policies: generative models wrapped as stochastic policies that roll out into a
``Trajectory`` and re-score stored actions. Importing this package imports every module in it,
which registers the policies by name in ``POLICIES`` (flow, diffusion, vlm)."""

from genrl.registry import import_submodules

import_submodules(__name__)
