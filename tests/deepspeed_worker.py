"""One process of test_deepspeed.py, under ``torchrun --nproc_per_node 2`` on CPU (gloo): the digits
task's SD3 transformer (random weights) in a real ``DeepSpeedEngine`` with ZeRO-``stage`` and torch's
AdamW, trained with a flow-matching loss on per-process seeded batches from step ``start`` to ``stop``.
At ``start`` > 0 it resumes from the newest checkpoint under ``root`` through genrl's path (its own
file: ``resume_state(rank=...)``, weights, then ``genrl.zero.load_state_dict``); at ``stop`` it writes
one through ``save_sharded_checkpoint`` with ``genrl.zero.state_dict`` (and at each SAVE_AT step before it).

Usage: deepspeed_worker.py ROOT STAGE START STOP [SAVE_AT ...]
"""

import sys

import deepspeed
import torch
import torch.distributed as dist

from genrl import zero
from genrl.checkpoint import resume_state, save_sharded_checkpoint
from genrl.tasks.digits import build_transformer


def main(root: str, stage: int, start: int, stop: int, save_at: tuple[int, ...] = ()) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = build_transformer()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    config = {
        "train_micro_batch_size_per_gpu": 4,
        "train_batch_size": 4 * world,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": stage},
    }
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    if start:
        path, state = resume_state(root, clean=rank == 0, rank=rank, world_size=world)
        model.load_state_dict(state["model"])
        zero.load_state_dict(optimizer, state["optimizer"], rank, world)
        assert state["step"] == start, (path, state["step"])
    for step in range(start, stop):
        g = torch.Generator().manual_seed(1000 * step + rank)
        x1 = torch.randn(4, 1, 8, 8, generator=g)
        noise = torch.randn(4, 1, 8, 8, generator=g)
        t = torch.rand(4, generator=g)
        xt = (1 - t.view(-1, 1, 1, 1)) * x1 + t.view(-1, 1, 1, 1) * noise
        text, pooled = torch.randn(4, 3, 32, generator=g), torch.randn(4, 32, generator=g)
        v = engine(hidden_states=xt, encoder_hidden_states=text, pooled_projections=pooled, timestep=1000 * t).sample
        loss = (v - (noise - x1)).pow(2).mean()
        engine.backward(loss)
        engine.step()
        if step + 1 in save_at or step + 1 == stop:
            state = {"step": step + 1, "model": model.state_dict(), "optimizer": zero.state_dict(optimizer)}
            save_sharded_checkpoint(root, step + 1, state, keep_last=5)
    dist.destroy_process_group()  # not at interpreter exit: a gloo worker aborted there once


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:5]), save_at=tuple(map(int, sys.argv[5:])))
