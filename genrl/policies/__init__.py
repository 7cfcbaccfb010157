"""Policies: generative models wrapped as stochastic policies that roll out into a
``Trajectory`` and re-score stored actions. Registered by name in ``POLICIES``."""

from genrl.policies import diffusion  # noqa: F401  (registers "diffusion")
from genrl.policies import flow  # noqa: F401  (registers "flow")
from genrl.policies import vlm  # noqa: F401  (registers "vlm")
