"""A bounded cache of per-prompt conditioning (text-encoder outputs) for the denoising policies.

Encoding a prompt costs a text-encoder forward (T5-XXL for SD3.5 and FLUX), so policies keep
each prompt's embeddings. Kept forever on the GPU, a Flow-GRPO-size prompt file fills tens of
GiB (SD3.5-Medium: ~3.2 MiB per prompt). This cache is bounded in bytes and evicts the least
recently used prompts (``cachetools.LRUCache`` with the entries' tensor sizes as their weight),
and can keep its entries in CPU memory instead of on the device (``policy.prompt_cache_device``).

Every prompt is encoded **on its own** (a batch of one): a text encoder's output for a prompt
differs in the last bits with the batch it is encoded in (kernels block a matmul by its row
count; measured on the digits encoder on CPU), so batching new prompts together would make a
prompt's conditioning, and with it a run, depend on which prompts happened to be new together.
That broke bit-for-bit resume (a resumed run's cache starts empty). The cost is one encoder
forward per new prompt instead of one per batch, once per prompt while it stays cached.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from cachetools import LRUCache


def _nbytes(entry: Any) -> int:
    """Bytes held by one entry: a tensor or a dict of tensors."""
    if isinstance(entry, torch.Tensor):
        return entry.numel() * entry.element_size()
    return sum(_nbytes(v) for v in entry.values())


def _to(entry: Any, device: torch.device) -> Any:
    if isinstance(entry, torch.Tensor):
        return entry.to(device)
    return {k: v.to(device) for k, v in entry.items()}


class PromptCache:
    """``get(prompts, encode)`` -> one entry per prompt (in order), encoding only the prompts not
    cached, each alone: ``encode([prompt]) -> [entry]`` (see the module docstring for why).

    ``max_mb``: the bound in MiB (0 = no caching; an entry larger than the bound is not kept).
    ``where``: ``"device"`` keeps entries as ``encode`` returns them; ``"cpu"`` keeps them in CPU
    memory and copies them to ``device`` on every use."""

    def __init__(self, max_mb: float, where: str, device: torch.device):
        if where not in ("device", "cpu"):
            raise ValueError(f"policy.prompt_cache_device must be 'device' or 'cpu', got {where!r}")
        self.device, self.on_cpu = torch.device(device), where == "cpu"
        self._cache = LRUCache(maxsize=max(int(max_mb * 2**20), 0), getsizeof=_nbytes)

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def nbytes(self) -> int:
        """Bytes held now (at most the bound)."""
        return int(self._cache.currsize)

    def get(self, prompts: list[str], encode: Callable[[list[str]], list[Any]]) -> list[Any]:
        found = {p: self._cache[p] for p in dict.fromkeys(prompts) if p in self._cache}  # marks them recently used
        for p in sorted(set(prompts) - set(found)):
            (entry,) = encode([p])
            found[p] = entry
            if self._cache.maxsize > 0:
                try:
                    self._cache[p] = _to(entry, torch.device("cpu")) if self.on_cpu else entry
                except ValueError:  # larger than the whole bound: used now, not kept
                    pass
        if self.on_cpu:
            return [_to(found[p], self.device) for p in prompts]
        return [found[p] for p in prompts]
