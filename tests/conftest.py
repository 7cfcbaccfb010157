"""Shared fixtures: tiny real components (diffusers-style ``get_dummy_components``)."""

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes caches into one session-wide temp folder, never into ~/.cache."""
    monkeypatch.setenv("GENRL_CACHE", str(tmp_path_factory.getbasetemp() / "genrl-cache"))


def get_dummy_components():
    """The digits task's real classes from code: SD3Transformer2DModel, CLIP text encoder,
    a fast tokenizer and the flow-matching scheduler (random weights)."""
    from genrl.tasks import digits

    torch.manual_seed(0)
    return {
        "transformer": digits.build_transformer(),
        "scheduler": digits.build_scheduler(),
        "text_encoder": digits.build_text_encoder(),
        "tokenizer": digits.build_tokenizer(),
    }
