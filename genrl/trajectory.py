"""The batch every rollout becomes, whatever the modality.

A denoising step of a flow/diffusion sampler and a generated token are both an *action*
with a log-probability, so one container serves images, videos and VLM responses. The
objectives only ever read ``log_probs_old``, ``mask``, ``step_info`` and the advantages;
``data`` holds what the policy needs to re-score the actions with new weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def _pick(samples: Any, ids: list[int]) -> Any:
    if samples is None or isinstance(samples, torch.Tensor):
        return None if samples is None else samples[ids]
    return [samples[i] for i in ids]


def _cat(parts: list[Any]) -> Any:
    if parts[0] is None or isinstance(parts[0], torch.Tensor):
        return None if parts[0] is None else torch.cat(parts)
    return [s for p in parts for s in p]


@dataclass
class Trajectory:
    log_probs_old: torch.Tensor  # [B, T] log-prob of each action under the rollout weights
    mask: torch.Tensor  # [B, T] float 1/0: which actions are trained
    group_ids: torch.Tensor  # [B] int: samples of one prompt share an id (advantage groups)
    # per-action [B, T] values. Denoising policies record ``step_index`` (the step in the schedule),
    # ``std`` (the step's Gaussian std, the full one: flow_sde's includes sqrt(|dt|)), flow policies
    # ``sigma`` / ``sigma_next`` (noise levels before / after, sigma_next < sigma) and with sde=sage
    # ``grad_scale`` (SAGE's equaliser), the diffusion policy ``timestep``. ``log_prob`` adds per step:
    # ``mean_sq_diff`` (new vs rollout step mean, mean over dims), ``output_scale`` (|d mean / d output|
    # to first order: |dt| = sigma - sigma_next for flow steps, DDIM's gain), ``kl`` (closed-form, to
    # the reference) and its other conventions (``kl_flow_grpo``). Token policies: response tokens.
    step_info: dict[str, torch.Tensor] = field(default_factory=dict)
    # policy payload per sample: tensors with leading dim B, or lists of B per-sample objects
    # (e.g. a VLM's pixels, whose size differs from image to image)
    data: dict[str, Any] = field(default_factory=dict)
    samples: Any = (
        None  # decoded outputs scored by rewards: a tensor (images [B, C, H, W] in [0, 1]) or a list (texts)
    )
    prompts: list[str] = field(default_factory=list)
    metadata: list[dict] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return self.log_probs_old.shape[0]

    def index(self, idx: torch.Tensor) -> "Trajectory":
        """The sub-batch of samples ``idx`` (a 1-D index tensor)."""
        ids = idx.tolist()
        pick = lambda d: {k: _pick(v, ids) if isinstance(v, list) else v[idx] for k, v in d.items()}  # noqa: E731
        return Trajectory(
            log_probs_old=self.log_probs_old[idx],
            mask=self.mask[idx],
            group_ids=self.group_ids[idx],
            step_info=pick(self.step_info),
            data=pick(self.data),
            samples=_pick(self.samples, ids),
            prompts=[self.prompts[i] for i in ids],
            metadata=[self.metadata[i] for i in ids],
        )

    @staticmethod
    def cat(parts: list["Trajectory"]) -> "Trajectory":
        """Concatenate along the batch dimension (rollout chunks -> one batch)."""
        first = parts[0]

        def cat(key: str, attr: str) -> Any:
            tensors = [getattr(p, attr)[key] for p in parts]
            if isinstance(tensors[0], list):
                return _cat(tensors)
            shapes = sorted({tuple(t.shape[1:]) for t in tensors})
            if len(shapes) > 1:  # e.g. prompts or images of different sizes in two rollout chunks
                raise ValueError(
                    f"rollout chunks differ in {attr}[{key!r}] per-sample shape {shapes}; roll out each "
                    f"step in one chunk (rollout.batch_size >= the step's samples) or fix the width "
                    f"(policy.max_prompt_length for token policies, policy.max_sequence_length for "
                    f"text-conditioned flow families such as qwen_image)"
                )
            return torch.cat(tensors)

        return Trajectory(
            log_probs_old=torch.cat([p.log_probs_old for p in parts]),
            mask=torch.cat([p.mask for p in parts]),
            group_ids=torch.cat([p.group_ids for p in parts]),
            step_info={k: cat(k, "step_info") for k in first.step_info},
            data={k: cat(k, "data") for k in first.data},
            samples=_cat([p.samples for p in parts]),
            prompts=[s for p in parts for s in p.prompts],
            metadata=[m for p in parts for m in p.metadata],
        )
