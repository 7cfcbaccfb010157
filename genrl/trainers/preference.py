"""Preference trainer: SePPO (and its controls, Diffusion-DPO and SFT) from winning samples only.

SePPO (Zhang et al., arXiv 2410.05255) aligns a flow or diffusion policy with no reward model and
no human losers: each winner is paired with a sample the *reference model* generates for the same
prompt, the reference is drawn from the run's own earlier checkpoints (random checkpoint replay,
``genrl.replay``), and an anchor criterion decides per pair whether that sample is pushed down
(``genrl.objectives.preference``). Reads top to bottom:

    for step in range(start, max_steps):
      ref = pool entry drawn every redraw_every steps            (replay: uniform; fixed: the start)
      for each of gradient_accumulation_steps micro-batches:
        prompts, winners = task.preference_batch(batch_size)      (seeded by (seed, step): exact resume)
        x_w     = policy.encode_samples(winners)                   clean latents [B, ...]
        x_l     = ref's samples for the same prompts               (the policy's ODE sampler, ref's weights)
        u, eps  = one noise level (train.timestep_sampling) and noise per pair, shared by x_w and x_l
        errors  = denoising errors [B] of the policy (with grad) and of ref (no grad) on x_w and x_l
        loss    = objective(errors) -> backward (/ accumulation)
      clip -> AdamW -> lr schedule; pool.add(step) every snapshot_every steps (not with mode fixed)
      log / evaluate / checkpoint (weights, optimizer, schedule, pool, current reference)

Before anything is written, a task with ``check_sample_shape(shape)`` checks its winners against the
model's sample shape ``(C, H, W)`` / ``(F, C, H, W)`` (``preference_data``: every row's kind, image or
video, and the channels). The ``sft`` objective needs no pairs: the trainer then skips the reference
entirely and keeps no snapshot pool. Runs under ``accelerate`` like the online trainer (policy.model
is the prepared, possibly DDP-wrapped module).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections import defaultdict

import torch

from genrl.checkpoint import checkpoint_path, checkpoint_step, list_checkpoints, save_checkpoint
from genrl.config import PreferenceConfig
from genrl.models import prepare_models
from genrl.objectives.common import checked_call
from genrl.preemption import Preempted, StopRequest
from genrl.registry import OBJECTIVES, POLICIES, TASKS
from genrl.replay import CheckpointPool
from genrl.seeding import derive_seed
from genrl.trainers import common

DISK_POOL_MIB = 256  # reference.storage auto: snapshots larger than this go to disk


def train(cfg: PreferenceConfig) -> dict[str, dict]:
    """Run (or resume) a preference job; returns ``{"base": eval metrics at step 0, "final": at
    max_steps}`` (also written to ``final_metrics.json``). Raises ``ValueError`` for a task without
    winners (``preference_batch``) or a policy without the denoising-loss path."""
    accelerator = common.make_accelerator(cfg.train, cfg.seed)
    if accelerator.state.deepspeed_plugin is not None:
        raise ValueError("trainer: preference does not run under DeepSpeed yet: launch it with DDP (or one process)")
    main = accelerator.is_main_process
    run_dir, ckpt_dir = cfg.output_dir, os.path.join(cfg.output_dir, "checkpoints")
    objective = OBJECTIVES.get(cfg.objective.name)
    pairs = OBJECTIVES.meta(objective).get("pairs", True)  # sft trains on winners alone
    policy_cls, task_cls = POLICIES.get(cfg.policy.name), TASKS.get(cfg.task)
    if not callable(getattr(task_cls, "preference_batch", None)):
        raise ValueError(f"task={cfg.task!r} provides no winning samples (preference_batch); use digits")
    if not callable(getattr(policy_cls, "denoising_error", None)):
        raise ValueError(f"policy.name={cfg.policy.name!r} has no denoising loss; use a flow or diffusion policy")
    common.refuse_lora_dropout(cfg.policy)
    torch.manual_seed(cfg.seed)

    task = common.build_task(task_cls, cfg)
    with accelerator.main_process_first():
        prepare_models(cfg)
        policy = policy_cls.from_pretrained(cfg.policy, device=accelerator.device, rollouts=False)  # ODE only
    tc = cfg.train
    optimizer = common.make_optimizer(policy.trainable_parameters(), tc)
    policy.model, optimizer = accelerator.prepare(policy.module, optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: common.lr_multiplier(s, cfg))
    named = {n: p for n, p in policy.module.named_parameters() if p.requires_grad}
    snapshot_mib = sum(p.numel() * p.element_size() for p in named.values()) / 2**20
    on_disk = cfg.reference.storage == "disk" or (cfg.reference.storage == "auto" and snapshot_mib > DISK_POOL_MIB)
    pool_dir = os.path.join(run_dir, "pool") if on_disk else None
    # sft trains on winners alone: no reference, so no snapshots
    pool = CheckpointPool(named, cfg.reference.mode, cfg.reference.max_pool, pool_dir, main) if pairs else None
    ref_index = 0

    start, ckpt = 0, None
    guard = common.NonFiniteGuard()  # skips non-finite gradient steps, stops after 5 in a row
    found, data_files, base = common.resume_point(cfg, task, ckpt_dir, clean=main, processes=accelerator.num_processes)
    if found:
        ckpt, state = found
        try:
            policy.load_trainable_state_dict(state["model"])
            if pool is not None:
                if state.get("pool") is None:  # written by sft, which keeps no pool
                    raise ValueError(
                        "no reference pool (written with objective.name=sft, which keeps none); resume with the "
                        "config it was written with, or start over (resume=false)"
                    )
                pool.load_state_dict(state["pool"])
        except (ValueError, KeyError) as e:
            raise ValueError(f"{ckpt}: {e}") from None
        optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:  # checkpoints before the schedule existed ran at a constant lr
            scheduler.load_state_dict(state["scheduler"])
        start, ref_index = state["step"], state["ref_index"]
        guard.load_state_dict(state.get("nonfinite_guard") or {})
    # a word the model does not know: now, naming its row
    policy.check_prompts([item for items in common.task_prompts(task, cfg.task) for item in items])
    shape = policy.sample_shape()  # [C, H, W] / [F, C, H, W]
    if callable(check := getattr(task, "check_sample_shape", None)):
        check(shape)  # every winner fits the model (kind, channels): a bad row fails before anything is written
    logger = common.open_run(cfg, start, main, ckpt)
    if pool is not None:
        pool.flush()  # on disk: the start's snapshot is written only now that start-up succeeded
    accelerator.wait_for_everyone()

    def run_eval(step: int) -> dict[str, float]:
        def evaluate() -> dict[str, float]:
            # the task's judges only
            m = common.evaluate_task(task, cfg, policy, {}, cfg.eval, run_dir, step, seed=cfg.seed)
            logger.log_eval(step, m)
            return m

        return common.on_main_process(accelerator, evaluate)  # an error there stops every process, in one line

    # the base; or a finished run's missing final evaluation
    for at in common.evaluations_due(cfg, start, accelerator):
        run_eval(at)
    bar = common.step_bar(cfg, start, "preference", main)
    rank, B = accelerator.process_index, tc.batch_size
    accum = tc.gradient_accumulation_steps
    stopping = 0  # the signal that stopped the run early (StopRequest)
    with StopRequest() as stop:
        for step in bar:
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, step, rank))
            if pairs and step % cfg.reference.redraw_every == 0:
                ref_index = pool.draw(torch.Generator().manual_seed(derive_seed(cfg.seed, step, 3)))
            ref = pool.reference(ref_index, policy.module) if pairs else None
            sums, t_ref = defaultdict(float), 0.0
            for micro in range(accum):  # gradient_accumulation_steps micro-batches, one optimizer step
                # 1. winners, and the reference's samples for the same prompts
                t1 = time.perf_counter()
                prompts, winners = task.preference_batch(B, g, shape)
                x_w = policy.encode_samples(winners)  # [B, ...]
                cond = policy.encode_prompts(prompts)
                u = (
                    torch.rand(B, generator=g)
                    if tc.timestep_sampling == "uniform"
                    else torch.randn(B, generator=g).sigmoid()
                )
                noise_w = policy.noise(B, g)
                if pairs:
                    seeds = torch.randint(0, 2**31 - 1, (B,), generator=g).tolist()
                    x_l = policy.sample_latents(
                        prompts, seeds, cfg.reference.num_steps or None, cfg.reference.guidance_scale, model=ref
                    )
                    with torch.no_grad():
                        err_w_ref = policy.denoising_error(x_w, cond, u, noise_w, model=ref)
                        err_l_ref = policy.denoising_error(x_l, cond, u, noise_w, model=ref)
                t_ref += time.perf_counter() - t1

                # 2. the policy's errors on both samples (same t and noise as the reference's), the loss
                last = micro == accum - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(policy.model), accelerator.autocast():
                    err_w = policy.denoising_error(x_w, cond, u, noise_w)
                    if pairs:
                        err_l = policy.denoising_error(x_l, cond, u, noise_w)
                        args = (err_w, err_w_ref, err_l, err_l_ref, cfg.objective)
                    else:
                        args = (err_w, None, None, None, cfg.objective)
                    loss, m = checked_call(objective, *args, option="objective.name", name=cfg.objective.name)
                    accelerator.gradient_state._set_sync_gradients(last)  # DeepSpeed: step only after the last one
                    accelerator.backward(loss / accum)
                for k, v in m.items():
                    sums[k] += v / accum  # metrics: the mean over micro-batches
            max_norm = tc.max_grad_norm if tc.max_grad_norm > 0 else float("inf")
            grad_norm = float(accelerator.clip_grad_norm_(policy.trainable_parameters(), max_norm))
            lr = optimizer.param_groups[0]["lr"]
            stepped = guard.ok(grad_norm)  # a NaN / inf gradient: no step (counted), the schedule still advances
            if stepped:
                optimizer.step()
            with warnings.catch_warnings():  # torch's "scheduler before optimizer" hint, for a skipped first step
                warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1
            if done == cfg.max_steps:
                guard.check_last_step()
            if pairs and pool.grows and done % cfg.reference.snapshot_every == 0:
                ref_index = pool.add(done, ref_index)
                if ref_index < 0:  # the snapshot in use left the pool: draw again now
                    ref_index = pool.draw(torch.Generator().manual_seed(derive_seed(cfg.seed, done, 3)))
            t3 = time.perf_counter()

            # 3. log, evaluate, checkpoint
            metrics = {
                **sums,
                "grad/norm": grad_norm,
                "train/lr": lr,
                "train/nonfinite_steps_skipped": int(not stepped),
                "time/reference": t_ref,
                "time/update": t3 - t0 - t_ref,
                "time/step": t3 - t0,
            }
            if pairs:  # sft keeps no pool: no reference to log
                metrics.update({"train/ref_step": pool.steps[ref_index], "train/pool_size": len(pool)})
            if main:
                logger.log(done, metrics)
                bar.set_postfix(loss=f"{next(iter(sums.values())):.4f}", refresh=False)
            if done == cfg.max_steps or (cfg.eval.every and done % cfg.eval.every == 0):
                run_eval(done)
            stopping = stop.requested(accelerator)  # SIGTERM / Ctrl-C: checkpoint this step, then stop
            saving = done == cfg.max_steps or stopping or (cfg.checkpoint.every and done % cfg.checkpoint.every == 0)
            if saving:  # every process: none waits at the barrier below for one that stopped
                common.check_finite(policy.module.named_parameters())
            if main and saving:
                state = {
                    "step": done,
                    "model": policy.trainable_state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "pool": pool.state_dict() if pairs else None,
                    "ref_index": ref_index,
                    "nonfinite_guard": guard.state_dict(),
                    "data_files": data_files,
                    "num_processes": accelerator.num_processes,  # train.batch_size pairs each: a resume keeps it
                }
                save_checkpoint(ckpt_dir, done, state, cfg.checkpoint.keep_last, common.checkpoint_record(cfg, base))
                if pairs:  # on disk: remove the snapshot files no kept checkpoint names
                    pool.prune_files(checkpoint_step(list_checkpoints(ckpt_dir)[0]))
            accelerator.wait_for_everyone()
            if stopping:
                break
    bar.close()
    if main:
        logger.close()
    if stopping:  # every process: each exits with the signal's code (the main one prints the line)
        raise Preempted(done, checkpoint_path(ckpt_dir, done), stopping, cfg.resume)
    return common.write_final_metrics(cfg) if main else {}
