"""genrl: align generative models (flow, diffusion, vision-language) with reinforcement learning."""

__version__ = "0.1.0"
