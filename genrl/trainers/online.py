"""Online RL trainer: rollout -> reward -> group advantages -> clipped policy update.

One loop for every policy and objective in the registries (Flow-GRPO, arXiv 2505.05470,
Algorithm 1; DeepSeekMath's GRPO for tokens). Reads top to bottom:

    for step in range(start, max_steps):
        prompts  = k distinct prompts x group_size            (GroupSampler, per-process share)
        traj     = policy.rollout(prompts)                    (no grad; log-probs of the actions; in chunks)
        rewards  = sum_i w_i * reward_i(traj.samples)         (per chunk, optionally in a thread while the
                                                               next chunk rolls out; NaN -> sample masked out)
                   (rollout.dynamic_sampling: more rounds until every group's rewards vary; genrl.rollouts)
        adv      = advantage estimator (GRPO's group-normalised rewards, BNPO, RiskPO) over the rewards
                   gathered from all processes (or MixGRPO: sum_i w_i * adv_i); optionally D3S keeps the
                   samples and actions of largest signal
        update   = minibatches x timestep chunks -> objective -> backward -> optimizer step
        log / evaluate / checkpoint

Runs under ``accelerate`` (one CPU, one GPU, or ``accelerate launch`` on many).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Callable

import torch

from genrl import sharding, zero
from genrl.advantages import Advantages, d3s
from genrl.checkpoint import checkpoint_path, save_checkpoint, save_sharded_checkpoint
from genrl.config import OnlineConfig
from genrl.ema import EMA, Anchor
from genrl.kl_control import FixedKL, build_kl_controller
from genrl.models import prepare_models
from genrl.objectives.common import (
    checked_call,
    objective_chunk_weight,
    objective_normaliser,
    per_step_means,
    per_step_ratio_stats,
)
from genrl.policies.denoiser import DenoisingPolicy
from genrl.preemption import Preempted, RunFailed, StopRequest
from genrl.registry import ADVANTAGE_ESTIMATORS, OBJECTIVES, POLICIES, REWARDS, TASKS
from genrl.rollouts import Rollout, dynamic_sampling, observed
from genrl.samplers import GroupSampler, VarianceAwareSampler
from genrl.scoring import (
    ChunkScorer,
    build_rewards,
    check_reward_kinds,
    check_reward_samples,
    check_rewards_take,
    combine,
    finite_mean,
)
from genrl.seeding import derive_seed
from genrl.threads import ThreadGovernor
from genrl.trainers import common
from genrl.trajectory import Trajectory

MAX_CONSECUTIVE_REWARD_FAILURES = 3  # whole batches without a single valid reward -> stop


def _mean_key(key: str) -> str:
    """The mean logged beside a standard deviation: ``ratio/std`` -> ``ratio/mean``, ``ratio/std_step_03`` ->
    ``ratio/mean_step_03``, ``ratio/raw_std`` -> ``ratio/raw_mean`` (the last ``std`` replaced)."""
    head, sep, tail = key.rpartition("std")
    return f"{head}mean{tail}" if sep else ""


def _pool(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float]:
    """Two ``(weight, mean, weighted sum of squared deviations)`` summaries as one (Chan et al.'s pairwise
    update: no cancellation between the ratio's mean near 1 and its spread near 1e-3)."""
    (wa, ma, sa), (wb, mb, sb) = a, b
    w = wa + wb
    if w <= 0:
        return a
    delta = mb - ma
    return w, ma + delta * wb / w, sa + sb + delta * delta * wa * wb / w


class _WeightedMeans:
    """Averages per-chunk metrics, weighting each by its number of trained actions; ``result``
    averages over every process (each metric's weighted sum and weight are gathered). A standard
    deviation logged beside its mean (``ratio/std`` and ``ratio/mean``; ``ratio/std_step_03``) is pooled
    instead: the deviation over all the chunks' actions, within and between chunks. Averaging the chunks'
    own deviations gave a smaller figure the finer the update was split (``train.timestep_chunk=1`` left
    out the spread between steps), though the gradient is the same."""

    def __init__(self):
        self.sums, self.weights = defaultdict(float), defaultdict(float)
        self.spreads: dict[str, tuple[float, float, float]] = {}  # std key -> (weight, mean, sum of sq. deviations)

    def add(self, metrics: dict[str, float], weight: float) -> None:
        for k, v in metrics.items():
            self.sums[k] += v * weight
            self.weights[k] += weight
            mean = metrics.get(_mean_key(k))
            if mean is not None and weight > 0:
                self.spreads[k] = _pool(self.spreads.get(k, (0.0, 0.0, 0.0)), (weight, mean, weight * v * v))

    def result(self, accelerator=None) -> dict[str, float]:
        parts = [(dict(self.sums), dict(self.weights), dict(self.spreads))]
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            parts = gather_object(parts)  # every process's (sums, weights, spreads); keys may differ between them
        sums, weights, spreads = defaultdict(float), defaultdict(float), {}
        for s, w, p in parts:
            for k in s:
                sums[k] += s[k]
                weights[k] += w[k]
            for k, summary in p.items():
                spreads[k] = _pool(spreads.get(k, (0.0, 0.0, 0.0)), summary)
        out = {k: sums[k] / weights[k] for k in sums if weights[k] > 0}
        for k, (w, _, squares) in spreads.items():
            if w > 0:
                out[k] = math.sqrt(max(squares / w, 0.0))
        return out


def update(
    policy,
    traj: Trajectory,
    advantages,
    optimizer,
    objective,
    cfg: OnlineConfig,
    accelerator,
    ema,
    generator,
    kl_control=None,
    guard: common.NonFiniteGuard | None = None,
    measure_kl: bool = False,
    progress: float = 0.0,
    objective_state=None,
) -> dict[str, float]:
    """Policy-gradient updates on one rollout batch; returns metrics averaged over all processes.

    One optimizer step's loss is the objective's aggregation over all of its trained actions on
    every process: each chunk's loss is weighted by its share of the step's normaliser (summed
    over the micro-batches and all-reduced), times the number of processes that data
    parallelism averages over (``genrl.objectives.common``, "Chunks, micro-batches and
    processes"). So ``batch_size x gradient_accumulation_steps`` and the process count change
    only how the work is split, never the gradient.

    The reference model runs only when the loss needs it (``objective.beta > 0``), or, with
    ``measure_kl``, on the first minibatch to log ``loss/kl`` (``log.kl_every``). ``progress``, the
    share of training done (``step / max_steps``), reaches the objective as ``step_info["progress"]``
    (MDPO's annealed step size). ``objective_state``, the state of an objective registered with
    ``state=`` (CAPO's shadow moments), reaches it as ``step_info["objective_state"]``: its
    ``log_prob_kwargs()`` go to the policy's re-scoring, ``skip_step(accelerator)`` can skip an optimizer
    step in which the objective itself left every action out, and ``after_optimizer_step(accelerator,
    stepped)`` follows each optimizer step (``stepped`` False when skipped)."""
    tc = cfg.train
    B, T = traj.log_probs_old.shape
    chunk = tc.timestep_chunk or T
    per_opt = tc.batch_size * tc.gradient_accumulation_steps  # samples per optimizer step (this process)
    params = policy.trainable_parameters()
    world = accelerator.num_processes
    kl_control = kl_control or FixedKL(cfg.objective.beta)
    guard = guard or common.NonFiniteGuard()  # the trainer's own keeps counting across steps
    nonfinite_before = guard.total
    obj_cfg = copy.copy(cfg.objective)  # its beta is the KL controller's current coefficient
    state_kw = objective_state.log_prob_kwargs() if objective_state is not None else {}
    acc, grad_norms, skipped = _WeightedMeans(), [], 0
    for epoch in range(tc.inner_epochs):
        perm = torch.randperm(B, generator=generator).to(traj.log_probs_old.device)
        for o in range(0, B, per_opt):  # one optimizer step: gradient_accumulation_steps micro-batches
            total = accelerator.reduce(
                objective_normaliser(objective, traj.mask[perm[o : o + per_opt]], cfg.objective), reduction="sum"
            )  # normaliser of the whole optimizer batch, all processes
            for start in range(o, o + per_opt, tc.batch_size):
                idx = perm[start : start + tc.batch_size]
                sub, adv = traj.index(idx), advantages[idx]  # [b, T], [b]
                last_micro = start + tc.batch_size >= o + per_opt
                for c0 in range(0, T, chunk):
                    sl = slice(c0, min(c0 + chunk, T))
                    last = last_micro and c0 + chunk >= T
                    # KL to the reference: needed for the loss when beta > 0; otherwise measured on
                    # the first minibatch only when asked (log.kl_every), as a diagnostic
                    with_ref = cfg.objective.beta > 0 or (measure_kl and epoch == 0 and start == 0)
                    # FSDP reduce-scatters every backward whichever the launch (no unsharded gradients kept)
                    sharded = sharding.is_sharded(policy.model)
                    ctx = contextlib.nullcontext() if last or sharded else accelerator.no_sync(policy.model)
                    with ctx, accelerator.autocast():
                        log_probs, info = policy.log_prob(sub, sl, with_ref=with_ref, **state_kw)  # [b, t]
                        step_info = {**{k: v[:, sl] for k, v in sub.step_info.items()}, **info, "progress": progress}
                        if objective_state is not None:
                            step_info["objective_state"] = objective_state
                        mask = sub.mask[:, sl]
                        obj_cfg.beta = kl_control.value
                        loss, m = checked_call(
                            objective,
                            *(log_probs, sub.log_probs_old[:, sl], adv, mask, step_info, obj_cfg),
                            option="objective.name",
                            name=cfg.objective.name,
                        )
                        # chunks, micro-batches and processes add up to the loss over the optimizer batch
                        weight = objective_chunk_weight(objective, mask, sub.mask, cfg.objective, total=total) * world
                        accelerator.gradient_state._set_sync_gradients(last)  # DeepSpeed: step only after the last one
                        accelerator.backward(loss * weight)
                    if "loss/kl" in m and kl_control.adaptive:
                        kl_control.update(m.get("loss/kl_total", m["loss/kl"]))  # SAGE-GRPO: after every backward pass
                        m["loss/kl_coef"] = obj_cfg.beta
                    acc.add(m, mask.sum().item())
                    if policy.per_step_metrics:
                        for stats, n in per_step_ratio_stats(
                            log_probs.detach() - sub.log_probs_old[:, sl], mask, sub.step_info["step_index"][:, sl]
                        ):
                            acc.add(stats, n)
                        if epoch == 0 and "std" in sub.step_info:  # the rollout's noise level per step
                            for stats, n in per_step_means(
                                sub.step_info["std"][:, sl], mask, sub.step_info["step_index"][:, sl], "noise/std"
                            ):
                                acc.add(stats, n)
                        for i, g in policy.output_grad_norms().items():  # d loss / d output, per step
                            acc.add({f"grad/output_norm_step_{i:02d}": g}, 1.0)
            no_action = float(total) == 0
            if objective_state is not None:  # the objective may leave every action out itself (CAPO's mask)
                no_action = objective_state.skip_step(accelerator) or no_action
            stepped = False
            if no_action and accelerator.state.deepspeed_plugin is None:
                # no trained action in this optimizer batch on any process (all masked, or dropped as
                # zero-advantage): no step, so AdamW's momentum and weight decay do not move the weights
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
            else:
                max_norm = tc.max_grad_norm if tc.max_grad_norm > 0 else float("inf")
                norm = accelerator.clip_grad_norm_(params, max_norm)
                if norm is None:  # DeepSpeed clips inside its own step and keeps the norm
                    norm = policy.model.get_global_grad_norm()
                if norm is not None and not guard.ok(float(norm)):  # NaN / inf: no step, counted
                    optimizer.zero_grad(set_to_none=True)
                else:
                    grad_norms.append(float("nan") if norm is None else float(norm))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    stepped = True
                    if ema is not None:
                        ema.update()
                    if policy.anchor is not None:  # SAGE-GRPO's moving anchor: copied every anchor_period steps
                        policy.anchor.step()
            if objective_state is not None:
                objective_state.after_optimizer_step(accelerator, stepped)
    out = acc.result(accelerator)
    per_step = [v for k, v in out.items() if k.startswith("grad/output_norm_step_")]
    if per_step and min(per_step) > 0:  # how unequal the denoising steps' gradients are (1 = equal)
        out["grad/output_norm_spread"] = max(per_step) / min(per_step)
    out["grad/norm"] = sum(grad_norms) / max(len(grad_norms), 1)
    out["train/optimizer_steps"] = len(grad_norms)
    out["train/optimizer_steps_skipped"] = skipped
    out["train/nonfinite_steps_skipped"] = guard.total - nonfinite_before
    return out


def check_entry_kinds(cfg, objective, policy_cls, task_cls, reward_classes) -> None:
    """Entries named by import path must be of the right kind: a ``ValueError`` naming the key, before
    any work, instead of a ``TypeError`` deep in the first update."""
    import inspect

    try:  # (log_probs_new, log_probs_old, advantages, mask, step_info, config)
        inspect.signature(objective).bind(*range(6))
    except (TypeError, ValueError):
        raise ValueError(
            f"objective.name={cfg.objective.name!r} is not an objective function "
            "(log_probs_new, log_probs_old, advantages, mask, step_info, config) -> (loss, metrics)"
        ) from None
    if not callable(getattr(policy_cls, "from_pretrained", None)):
        raise ValueError(f"policy.name={cfg.policy.name!r} is not a policy class (no from_pretrained)")
    missing = [m for m in ("from_config", "train_prompts", "evaluate") if not callable(getattr(task_cls, m, None))]
    if missing:
        raise ValueError(f"task={cfg.task!r} is not a task class (genrl.protocols.Task): missing {missing}")
    for name, cls in reward_classes.items():
        if not callable(cls):
            raise ValueError(f"rewards.{name}: not a reward (a class or function (samples, prompts, metadata))")


def train(cfg: OnlineConfig, on_step: Callable[[int, dict], None] | None = None) -> dict[str, dict]:
    """Run (or resume) an online RL job; returns ``{"base": eval metrics at step 0,
    "final": eval metrics at max_steps}`` (also written to ``final_metrics.json``).

    ``on_step(step, metrics)``, if given, is called on every process after each step's metrics are
    logged, before that step's evaluation and checkpoint (``genrl bench --overhead`` times the bare
    network calls there, between iterations). Its time is in later rows' ``time/elapsed`` only."""
    from accelerate.utils import gather_object

    accelerator = common.make_accelerator(cfg.train, cfg.seed)
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    run_dir, ckpt_dir = cfg.output_dir, os.path.join(cfg.output_dir, "checkpoints")
    objective = OBJECTIVES.get(cfg.objective.name)  # unknown names fail before any work
    advantages_of = Advantages(ADVANTAGE_ESTIMATORS.get(cfg.advantages.estimator), cfg.advantages, cfg.rewards)
    policy_cls, task_cls = POLICIES.get(cfg.policy.name), TASKS.get(cfg.task)
    reward_classes = {name: REWARDS.get(name) for name in cfg.rewards}
    check_entry_kinds(cfg, objective, policy_cls, task_cls, reward_classes)
    common.refuse_lora_dropout(cfg.policy)
    check_reward_kinds(reward_classes, cfg.reward_args)  # each reward callable as (samples, prompts, metadata)
    fsdp = sharding.fsdp_requested(cfg.train.fsdp)
    if fsdp:  # checked before anything loads
        sharding.check_supported(
            world,
            accelerator.state.deepspeed_plugin is not None,
            cfg.rollout.dynamic_sampling,
            issubclass(policy_cls, DenoisingPolicy),
        )
    torch.manual_seed(cfg.seed)

    task = common.build_task(task_cls, cfg)
    train_set, evaluated = common.task_prompts(task, cfg.task)  # [(prompt, metadata)] each
    with accelerator.main_process_first():  # the first process builds caches (pretraining), the rest load
        prepare_models(cfg)  # the task: / sft: models the config names, built (logged) if missing
        policy = policy_cls.from_pretrained(cfg.policy, device=accelerator.device)
        check_reward_samples(reward_classes, policy.samples, f"policy.model={cfg.policy.model!r}")  # a hub id's family
        rewards = build_rewards(reward_classes, cfg.reward_args)
    prompts = train_set + evaluated  # the evaluation's too, where the task has its own
    shape = policy.sample_shape()  # [C, H, W] / [F, C, H, W] (one decode); None for text
    if shape is not None and callable(check := getattr(task, "check_sample_shape", None)):
        check(shape)  # the task's judges take the model's samples (digits: 1x8x8)
    check_rewards_take(reward_classes, shape, prompts)  # what each reward says it needs
    # every prompt the policy can take (a VLM prompt over max_prompt_length, a word the digits model does not
    # know): fails now, naming its row, not at the step that draws it
    if callable(check := getattr(task, "check_prompts", None)):  # a response task's own evaluated examples
        check(policy, cfg.eval)
    else:
        policy.check_prompts(prompts)
    asynchronous = torch.cuda.is_available() if cfg.rollout.async_rewards == "auto" else cfg.rollout.async_rewards
    scorer = ChunkScorer(rewards, asynchronous)
    if fsdp:  # FSDP2: every parameter a DTensor shard; gradients reduce-scattered by FSDP itself
        for module in (policy.module, policy.ref_model):
            if module is not None:
                sharding.shard(module)
    params = policy.trainable_parameters()
    if (ds := accelerator.state.deepspeed_plugin) is not None:
        zero.check_stage(ds.zero_stage)
        # DeepSpeed takes its sizes from its config (there is no dataloader to infer them from).
        # Its engine steps inside the backward that ends an accumulation; update() marks that
        # backward through accelerate's gradient state, and the loss weights already average.
        ds.deepspeed_config.update(
            train_micro_batch_size_per_gpu=cfg.train.batch_size,
            gradient_accumulation_steps=1,
            gradient_clipping=cfg.train.max_grad_norm,
        )
    optimizer = common.make_optimizer(params, cfg.train)
    if fsdp:  # sharded already; the optimizer steps on its shards (accelerate's FSDP wrapping is not used)
        policy.model = policy.module
    else:
        policy.model, optimizer = accelerator.prepare(policy.module, optimizer)
    ema = (
        EMA(params, cfg.train.ema_decay, cfg.train.ema_every, cfg.train.ema_warmup)
        if cfg.train.ema_decay > 0
        else None
    )
    kl_control = build_kl_controller(cfg.objective)  # objective.beta, or SAGE-GRPO's adaptive coefficient
    guard = common.NonFiniteGuard()  # skips non-finite gradient steps, stops after 5 in a row
    state_cls = OBJECTIVES.meta(objective).get("state")  # an objective's own state (CAPO's shadow moments)
    objective_state = state_cls(cfg, policy, optimizer) if state_cls is not None else None
    if cfg.objective.anchor_period > 0:
        named = {n: p for n, p in policy.module.named_parameters() if p.requires_grad}
        policy.anchor = Anchor(named, cfg.objective.anchor_period)  # policy.reference() now means the anchor
    total = cfg.rollout.prompts_per_step * cfg.rollout.group_size  # the sampler checks total % world
    local, per_opt = total // world, cfg.train.batch_size * cfg.train.gradient_accumulation_steps
    if total % world == 0 and local % per_opt:  # a remainder would leave gradients accumulated into the next update
        raise ValueError(
            f"each of the {world} processes rolls out {local} samples per step, not a multiple of "
            f"train.batch_size * train.gradient_accumulation_steps = {per_opt}; change one of them"
        )
    if cfg.rollout.dynamic_sampling and cfg.rollout.prompts_per_step % world:
        raise ValueError(
            f"rollout.dynamic_sampling keeps whole groups on each process: rollout.prompts_per_step="
            f"{cfg.rollout.prompts_per_step} must be divisible by the {world} processes"
        )
    shape = dict(
        num_prompts=len(train_set),
        prompts_per_step=cfg.rollout.prompts_per_step,
        group_size=cfg.rollout.group_size,
        seed=cfg.seed,
        num_processes=world,
        process_index=rank,
    )
    if cfg.rollout.sampler == "vas":
        v = cfg.rollout.vas
        sampler = VarianceAwareSampler(
            **shape,
            lam=v.lam,
            a=v.a,
            b=v.b,
            momentum=v.momentum,
            update_every=v.update_every,
            diversity=v.diversity,
            replacement=v.replacement,
        )
    else:
        sampler = GroupSampler(**shape)

    # one checkpoint file per process where each holds a part the others lack: FSDP's parameter shards,
    # ZeRO-1/2's optimizer partitions (genrl.zero)
    per_process = fsdp or (accelerator.state.deepspeed_plugin is not None and world > 1)
    start, ckpt = 0, None
    found, data_files, base = common.resume_point(cfg, task, ckpt_dir, main, rank if per_process else None, world)
    if found:
        ckpt, state = found
        if fsdp:  # this process's shards back into DTensors shaped like the live ones
            live = {
                "model": policy.trainable_state_dict(),
                "optimizer": sharding.optimizer_like(optimizer, state["optimizer"]),
            }
            live["ema"] = ema.state_dict() if ema is not None else None
            live["anchor"] = policy.anchor.state_dict() if policy.anchor is not None else None
            state = sharding.from_local(state, live)
        try:
            policy.load_trainable_state_dict(state["model"])
        except ValueError as e:
            raise ValueError(f"{ckpt}: {e}") from None
        zero.load_state_dict(optimizer, state["optimizer"], rank, world)
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if policy.anchor is not None:
            if state.get("anchor") is None:
                raise ValueError(
                    f"{ckpt} has no anchor state but objective.anchor_period={cfg.objective.anchor_period}; "
                    f"resume with the config it was written with, or start over (resume=false)"
                )
            policy.anchor.load_state_dict(state["anchor"])
        if state.get("sampler") is not None:
            sampler.load_state_dict(state["sampler"])
        kl_control.load_state_dict(state.get("kl_control") or {})
        guard.load_state_dict(state.get("nonfinite_guard") or {})
        try:
            advantages_of.load_state_dict(state.get("advantages") or {})
        except KeyError:
            raise ValueError(
                f"{ckpt} has no state for advantages.estimator={cfg.advantages.estimator}; resume with the config "
                f"it was written with, or start over (resume=false)"
            ) from None
        except ValueError as e:  # state of another shape (RiskPO: other quantile levels)
            raise ValueError(f"{ckpt}: {e}") from None
        if objective_state is not None:
            if state.get("objective_state") is None:
                raise ValueError(
                    f"{ckpt} has no state for objective.name={cfg.objective.name}; resume with the config it was "
                    f"written with, or start over (resume=false)"
                )
            try:
                objective_state.load_state_dict(state["objective_state"])
            except ValueError as e:  # CAPO: moments of another head
                raise ValueError(f"{ckpt}: {e}") from None
        start = state["step"]
    if per_process:  # every process must resume from the same checkpoint (each from its own file of it)
        steps = accelerator.gather(torch.tensor([start], device=accelerator.device)).tolist()
        if len(set(steps)) > 1:
            raise ValueError(
                f"the processes resumed from different checkpoints (steps {steps}): one process's file of the "
                f"newest is unreadable; move that checkpoint folder away and rerun"
            )
    # start-up succeeded: only now is anything written into output_dir
    logger = common.open_run(cfg, start, main, ckpt)

    def run_eval(step: int) -> dict[str, float]:
        # every process swaps in the EMA shards and gathers the weights (FSDP: collectives); main samples
        t0 = time.perf_counter()
        with ema.swapped_in() if ema is not None else contextlib.nullcontext(), sharding.gathered(policy.module):
            m = common.on_main_process(  # an error there stops every process (none waits at the next collective)
                accelerator,
                lambda: common.evaluate_task(task, cfg, policy, rewards, cfg.eval, run_dir, step, seed=cfg.seed),
            )
        if main:
            m.setdefault("time/eval", time.perf_counter() - t0)
            logger.log_eval(step, m)
        return m

    # the base; or a finished run's missing final evaluation
    for at in common.evaluations_due(cfg, start, accelerator):
        run_eval(at)
    consecutive_failures, flat_steps = 0, 0  # steps in a row without a valid reward / without reward variance
    bar = common.step_bar(cfg, start, "train", main)

    def collect(step: int, noise: torch.Generator, window: list[int], attempt: int = 0) -> Rollout:
        """1. rollout of this process's share of k prompts x group_size (round ``attempt`` of the step's
        draws), 2. its rewards: each chunk is scored (maybe in a thread) as the next one rolls out."""
        prompt_idx, group_ids = sampler.sample(step, attempt)
        prompts, meta = [train_set[i][0] for i in prompt_idx], [train_set[i][1] for i in prompt_idx]
        rb, parts, t0 = cfg.rollout.batch_size, [], time.perf_counter()
        for i in range(0, len(prompts), rb):
            with accelerator.autocast():  # the update's precision, so the first update's ratio is 1
                part = policy.rollout(prompts[i : i + rb], meta[i : i + rb], group_ids[i : i + rb], noise, window)
            scorer.submit(part.samples, part.prompts, part.metadata)
            parts.append(part)
        traj, t1 = Trajectory.cat(parts), time.perf_counter()
        values, failures, busy = scorer.collect()  # failed samples are NaN and get masked out
        return Rollout(traj, values, failures, busy, list(prompt_idx), (t1 - t0, time.perf_counter() - t1))

    stopping = 0  # the signal that stopped the run early (StopRequest)
    t_loop = time.perf_counter()
    # train.adaptive_threads: each iteration on 1 thread or the launch's count, whichever runs faster
    governing = ThreadGovernor(torch.get_num_threads()) if cfg.train.adaptive_threads else contextlib.nullcontext()
    with StopRequest() as stop, governing as governor:
        for step in bar:
            if governor is not None:
                governor.before_iteration()
            t_step = time.perf_counter()
            # 1.-2. rollout and rewards: noise unique per (step, rank), the SDE window the same on all ranks
            noise = torch.Generator().manual_seed(derive_seed(cfg.seed, step, rank))
            window = policy.window(torch.Generator().manual_seed(derive_seed(cfg.seed, step)))
            if cfg.rollout.dynamic_sampling:  # DAPO: more rounds until every group's rewards vary
                ro, ds_metrics, seen = dynamic_sampling(
                    lambda a: collect(step, noise, window, a),
                    cfg.rollout.prompts_per_step // world,
                    cfg.rewards,
                    cfg.rollout.dynamic_sampling_max_rounds,
                    first_group=rank,
                )
            else:
                ro, ds_metrics = collect(step, noise, window), {}
                seen = observed(ro, cfg.rewards)
            traj, values, failures, reward_busy, prompt_idx, (rollout_s, reward_s) = ro
            total = combine(values, cfg.rewards).to(accelerator.device)  # [B_local] weighted sum of the rewards
            t2 = time.perf_counter()

            # 3. advantages from the rewards of all processes (complete groups), then our slice
            all_rewards = accelerator.gather(total)
            all_groups = accelerator.gather(traj.group_ids)
            gathered = {
                k: accelerator.gather(v.to(accelerator.device)) for k, v in values.items()
            }  # every key, [B_all]
            adv_all, adv_stats = advantages_of(all_rewards, gathered, all_groups)  # [B_all], the same on every process
            B = total.shape[0]
            advantages = adv_all[rank * B : (rank + 1) * B].to(accelerator.device)
            traj.mask = traj.mask * torch.isfinite(total)[:, None].float()
            if cfg.advantages.downsample == "d3s":  # D3S: the samples and actions of largest signal
                adv_stats.update(
                    d3s.downsample(
                        traj,
                        adv_all,
                        all_groups,
                        torch.isfinite(all_rewards),
                        slice(rank * B, (rank + 1) * B),
                        cfg.advantages.d3s,
                        step / cfg.max_steps,
                    )
                )
            if (
                cfg.advantages.drop_zero
            ):  # Flow-GRPO: samples with advantage exactly 0 leave the update and its normaliser
                traj.mask = traj.mask * (advantages != 0)[:, None].float()
                adv_stats["reward/frac_zero_advantage"] = float(accelerator.gather(advantages).eq(0).float().mean())
            consecutive_failures = consecutive_failures + 1 if not torch.isfinite(all_rewards).any() else 0
            whole_run = consecutive_failures == step - start + 1  # every step of this launch: none trained
            if consecutive_failures >= MAX_CONSECUTIVE_REWARD_FAILURES or (whole_run and step == cfg.max_steps - 1):
                failed = ", ".join(f"{k!r} on {n} of {B}" for k, n in failures.items() if n)
                if failed or accelerator.num_processes > 1:
                    why = (
                        f"this step failed: {failed or 'none on this process'} (a reward that raised is named in a "
                        "warning above, with its error; one that returned NaN or inf is not; a sampler that diverged, "
                        "e.g. a large policy.eta, gives NaN images)"
                    )
                else:  # every reward returned finite numbers: their weighted totals overflowed
                    why = "no reward failed, but no weighted total was finite (the weighted sum overflowed)"
                since = f"since the resume at step {start}" if start else "of this run"
                raise RunFailed(
                    f"no sample had a valid reward for {consecutive_failures} consecutive steps"
                    f"{f' (every step {since})' if whole_run else ''}; a sample's weighted total is NaN when "
                    f"any of its rewards is, and {why}"
                )

            # every group's rewards equal (all advantages 0): nothing trains. Said once a streak reaches 3 steps, not
            # refused: a task the policy has solved looks the same, but so does a reward that is constant by
            # construction (policy.max_new_tokens=1 never fits the answer format), which trained silently
            flat_steps = flat_steps + 1 if adv_stats.get("reward/frac_zero_std") == 1.0 else 0
            if flat_steps == MAX_CONSECUTIVE_REWARD_FAILURES and main:
                warnings.warn(
                    f"every group's samples got equal rewards for {flat_steps} steps in a row (reward/frac_zero_std 1): "
                    "their advantages are 0 and the updates change nothing; unless the policy has solved the task, "
                    "the rewards cannot tell its samples apart (a response too short for the format a reward asks, "
                    "a temperature far from 1, a reward that is constant)"
                )

            # VAS: re-score prompts from every sample the processes rolled out, those dynamic sampling left out
            # too (each process's count may differ: gathered as objects; every process stays identical)
            if isinstance(sampler, VarianceAwareSampler):
                parts = gather_object([(seen.prompt_idx, seen.rewards.tolist(), seen.samples)])
                texts = None if any(t is None for _, _, t in parts) else [t for *_, ts in parts for t in ts]
                rewards_seen = torch.tensor([r for _, rs, _ in parts for r in rs], dtype=seen.rewards.dtype)
                sampler.update([i for idx, _, _ in parts for i in idx], rewards_seen, texts, step=step)

            t_adv = time.perf_counter()

            # 4. update
            upd = update(
                policy,
                traj,
                advantages,
                optimizer,
                objective,
                cfg,
                accelerator,
                ema,
                torch.Generator().manual_seed(derive_seed(cfg.seed, step, 7)),
                kl_control,
                guard,
                measure_kl=cfg.log.kl_every > 0 and (step + 1) % cfg.log.kl_every == 0,  # logged steps N, 2N, ...
                progress=step / cfg.max_steps,
                objective_state=objective_state,
            )
            t3 = time.perf_counter()

            # 5. log, evaluate, checkpoint
            done = step + 1
            if done == cfg.max_steps:
                guard.check_last_step()  # every optimizer step non-finite: a failed run, not a finished one
            metrics = {
                "reward/total_mean": finite_mean(all_rewards),  # NaN and inf samples are masked and counted
                **adv_stats,
                **upd,
                **ds_metrics,
                "time/rollout": rollout_s,
                "time/reward": reward_s,
                "time/reward_busy": reward_busy,
                "time/advantages": t_adv - t2,
                "time/update": t3 - t_adv,
                "time/step": t3 - t_step,
            }
            if governor is not None:
                metrics["time/threads"] = governor.in_use
                governor.after_iteration(t3 - t_step, warmup=step == start)
            if window:
                metrics["train/sde_window_start"] = window[0]
            if ds_metrics:
                rounds_filled = accelerator.gather(
                    torch.tensor(
                        [
                            [
                                ds_metrics["dynamic_sampling/rounds"],
                                ds_metrics["dynamic_sampling/filled_groups"],
                                ds_metrics["dynamic_sampling/dropped_groups"],
                            ]
                        ],
                        device=accelerator.device,
                    )
                )
                metrics["dynamic_sampling/rounds"] = int(rounds_filled[:, 0].max())  # the process that needed most
                metrics["dynamic_sampling/dropped_groups"] = int(rounds_filled[:, 2].sum())
                metrics["dynamic_sampling/filled_groups"] = int(rounds_filled[:, 1].sum())
            for k, v in gathered.items():
                finite = v[torch.isfinite(v)].double()  # float32's largest rewards would overflow
                metrics[f"reward/{k}_mean"] = finite_mean(v)
                metrics[f"reward/{k}_std"] = finite.std(unbiased=False).item() if finite.numel() else float("nan")
            counts = accelerator.reduce(
                torch.tensor([failures[k] for k in sorted(failures)], device=accelerator.device), reduction="sum"
            )  # failures of every process
            for k, n in zip(sorted(failures), counts.tolist()):
                metrics[f"reward/{k}_failed"] = int(n)
            times = [k for k in metrics if k.startswith("time/")]  # the slowest process sets the pace
            slowest = accelerator.gather(
                torch.tensor([[metrics[k] for k in times]], dtype=torch.float64, device=accelerator.device)
            ).amax(0)
            metrics.update(zip(times, slowest.tolist()))
            if "time/threads" in metrics:  # a count, not seconds (the gather made it a float)
                metrics["time/threads"] = int(metrics["time/threads"])
            if isinstance(sampler, VarianceAwareSampler):
                metrics.update(sampler.metrics())
            if policy.anchor is not None:
                metrics["train/anchor_moved_at"] = policy.anchor.moved_at
            metrics["time/elapsed"] = time.perf_counter() - t_loop  # since this process's loop began
            if main:
                logger.log(done, metrics)
                bar.set_postfix(
                    reward=f"{metrics['reward/total_mean']:.3f}", clip=f"{upd.get('ratio/clip_frac', 0):.2f}"
                )
            if on_step is not None:
                on_step(done, metrics)
            if done == cfg.max_steps or (cfg.eval.every and done % cfg.eval.every == 0):
                run_eval(done)
            stopping = stop.requested(accelerator)  # SIGTERM / Ctrl-C: checkpoint this step, then stop
            if done == cfg.max_steps or stopping or (cfg.checkpoint.every and done % cfg.checkpoint.every == 0):
                # every process: none waits below for one that stopped
                common.check_finite(policy.module.named_parameters())
                if main or per_process:  # every process writes its part
                    state = {
                        "step": done,
                        "model": policy.trainable_state_dict(),
                        "optimizer": zero.state_dict(optimizer),  # plain data (ZeRO partitions too)
                        "ema": ema.state_dict() if ema is not None else None,
                        "anchor": policy.anchor.state_dict() if policy.anchor is not None else None,
                        "sampler": sampler.state_dict() if isinstance(sampler, VarianceAwareSampler) else None,
                        "kl_control": kl_control.state_dict(),
                        "nonfinite_guard": guard.state_dict(),
                        "advantages": advantages_of.state_dict(),  # a stateful estimator's (RiskPO's tracker)
                        "objective_state": objective_state.state_dict() if objective_state is not None else None,
                        "data_files": data_files,
                    }
                    save = save_sharded_checkpoint if per_process else save_checkpoint
                    save(ckpt_dir, done, state, cfg.checkpoint.keep_last, common.checkpoint_record(cfg, base))
                accelerator.wait_for_everyone()
            if stopping:
                break
    scorer.close()
    result = {}
    if main:
        logger.close()
    if stopping:  # every process, past the checkpoint's barrier: none waits below for one that stopped
        raise Preempted(done, checkpoint_path(ckpt_dir, done), stopping, cfg.resume)
    if main:
        result = common.write_final_metrics(cfg)
    accelerator.wait_for_everyone()
    return result
