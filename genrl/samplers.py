"""Prompt samplers.

``GroupSampler`` (Flow-GRPO's k-repeat sampler): each step draws ``prompts_per_step``
distinct prompts and repeats each ``group_size`` times, so every group of one prompt is
complete in the batch gathered over all processes; each process takes a contiguous,
equal share of that global batch. The draw is a pure function of ``(seed, step)``, so
every process agrees on it without communication and a resumed run continues exactly.
"""

from __future__ import annotations

import torch


class GroupSampler:
    def __init__(self, num_prompts: int, prompts_per_step: int, group_size: int, seed: int = 0,
                 num_processes: int = 1, process_index: int = 0):
        if prompts_per_step > num_prompts:
            raise ValueError(f"rollout.prompts_per_step={prompts_per_step} exceeds the {num_prompts} prompts available")
        total = prompts_per_step * group_size
        if total % num_processes:
            raise ValueError(f"prompts_per_step * group_size = {total} must be divisible by the {num_processes} processes")
        self.num_prompts, self.k, self.g = num_prompts, prompts_per_step, group_size
        self.seed, self.world, self.rank = seed, num_processes, process_index

    @property
    def global_batch(self) -> int:
        return self.k * self.g

    def sample(self, step: int) -> tuple[list[int], list[int]]:
        """Prompt indices and group ids of this process's share at ``step``; each [B_local].

        Group id = position of the prompt in this step's draw (0..k-1), shared by all ranks.
        """
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        chosen = torch.randperm(self.num_prompts, generator=gen)[: self.k]  # [k]
        prompt_idx = chosen.repeat_interleave(self.g)  # [k * g], groups contiguous
        group_ids = torch.arange(self.k).repeat_interleave(self.g)
        per_rank = self.global_batch // self.world
        sl = slice(self.rank * per_rank, (self.rank + 1) * per_rank)
        return prompt_idx[sl].tolist(), group_ids[sl].tolist()
