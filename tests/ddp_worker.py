"""Runs under ``accelerate launch --num_processes 2`` (gloo on CPU) for tests/test_distributed.py:
a short RL (or preference) job from a config, then every process writes what the test compares
across processes: a hash of its trained weights, its sampled prompt indices and rollouts per
step (preference runs: its winners), and (main only) the run's metrics."""

import hashlib
import json
import os
import sys

import torch

from genrl.config import load_trainer_config
from genrl.registry import POLICIES, REWARDS, TASKS
from genrl.samplers import GroupSampler
from genrl.trainers import online, preference


@REWARDS.register("nan_on_rank1")
class NaNOnRank1:
    """Every sample of process 1 fails (NaN), every sample of process 0 scores 1: failure counts
    and the normaliser must be taken over both processes."""

    def __call__(self, samples, prompts, metadata):
        bad = int(os.environ.get("RANK", 0)) == 1
        return {"nan_on_rank1": torch.full((len(prompts),), float("nan") if bad else 1.0)}


def main(config_path: str, out_dir: str, *overrides: str) -> None:
    cfg = load_trainer_config(config_path, list(overrides))
    record = {"prompts": [], "rollouts": []}
    sample, rollout = GroupSampler.sample, POLICIES.get(cfg.policy.name).rollout  # VAS subclasses GroupSampler

    def recording_sample(self, step, attempt=0):
        idx, groups = sample(self, step, attempt)
        record["prompts"].append(list(idx))
        return idx, groups

    def recording_rollout(self, *args, **kwargs):
        traj = rollout(self, *args, **kwargs)
        s = traj.samples
        record["rollouts"].append(
            s if isinstance(s, list) else [hashlib.sha256(x.numpy().tobytes()).hexdigest() for x in s]
        )
        record.setdefault("answers", []).append([m.get("answer") for m in traj.metadata])
        return traj

    def recording_batch(self, *args, **kwargs):
        prompts, winners = batch(self, *args, **kwargs)
        record.setdefault("winners", []).append(hashlib.sha256(winners.numpy().tobytes()).hexdigest())
        return prompts, winners

    batch = getattr(TASKS.get(cfg.task), "preference_batch", None)
    if batch is not None:
        TASKS.get(cfg.task).preference_batch = recording_batch
    GroupSampler.sample = recording_sample
    POLICIES.get(cfg.policy.name).rollout = recording_rollout
    policies = []
    init = POLICIES.get(cfg.policy.name).__init__

    def keep(self, *args, **kwargs):
        init(self, *args, **kwargs)
        policies.append(self)

    POLICIES.get(cfg.policy.name).__init__ = keep
    (preference if cfg.trainer == "preference" else online).train(cfg)
    weights = torch.cat([p.detach().flatten().float() for p in policies[0].trainable_parameters()])
    rank = int(os.environ.get("RANK", 0))
    record["weights"] = hashlib.sha256(weights.numpy().tobytes()).hexdigest()
    record["weights_sum"] = float(weights.double().sum())
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
