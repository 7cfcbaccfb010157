"""Supervised fine-tuning of a VLM on reasoning traces: the cold start before RL.

MMR1 (arXiv 2509.21268) and the R1-style VLM recipes first fine-tune on chain-of-thought
answers, then run GRPO-family RL from that checkpoint. This trainer does the first half on any
task with target responses (``sft_examples``, ``genrl.tasks.response.ResponseTask``): the
embedded ``digit_sum`` (traces ``<think> ... </think> <answer> X </answer>``) or ``vlm_data``
with ``data.response_key``. Teacher forcing, cross-entropy on response tokens only, a warmup +
cosine/linear decay schedule (an RL run starting from a *short* SFT checkpoint wants one whose
learning rate was decayed). Reads top to bottom:

    for step in range(start, max_steps):
        examples = batch_size training examples              (seeded by (seed, step): exact resume)
        batch   = prompt + target tokens, labels = target only
        loss    = CE(model(batch), labels) -> backward -> clip -> AdamW -> lr schedule
        log / evaluate (greedy on held-out questions) / checkpoint
    save_pretrained(model + processor) -> output_dir/model/

Run directory: ``config.yaml``, ``metrics.jsonl``, ``tb/``, ``checkpoints/step-XXXXXX``,
``eval/step-XXXXXX/{samples.jsonl, *.png, summary.json}``, ``final_metrics.json``, ``model/``.
"""

from __future__ import annotations

import os
import time

import torch

from genrl.checkpoint import checkpoint_path, save_checkpoint
from genrl.config import SFTConfig
from genrl.models import prepare_models
from genrl.preemption import Preempted, StopRequest
from genrl.registry import TASKS
from genrl.seeding import derive_seed
from genrl.trainers import common
from genrl.vlm_batching import check_vlm_prompts, encode_sft, load_model_dir, save_model_dir


def train(cfg: SFTConfig) -> dict[str, dict]:
    """Run (or resume) SFT; returns ``{"base": eval metrics at step 0, "final": at max_steps,
    "model_dir": output_dir/model}`` (the metrics also go to ``final_metrics.json``)."""
    run_dir, ckpt_dir = cfg.output_dir, os.path.join(cfg.output_dir, "checkpoints")
    task_cls = TASKS.get(cfg.task)  # unknown names fail before any work
    if not callable(getattr(task_cls, "sft_examples", None)):
        raise ValueError(
            f"task={cfg.task!r} has no SFT examples (sft_examples); SFT needs a task with target responses (genrl.protocols.SFTTask)"
        )
    torch.manual_seed(cfg.seed)

    # 1. model, processor, optimizer, schedule
    task = common.build_task(task_cls, cfg)
    (model_path,) = prepare_models(cfg) or [cfg.model]  # task: / sft: built (logged) if missing; else a folder
    model, processor = load_model_dir(model_path)
    # every row it may draw (a task of fixed rows) and every evaluated prompt, as the online trainer checks its
    # own: text the tokenizer takes, within the model's context (not an out-of-memory at step 0)
    if callable(rows := getattr(task, "sft_rows", None)):
        examples = rows()
        check_vlm_prompts(model, processor, [(p, m) for p, m, _ in examples], responses=[r for *_, r in examples])
    evaluated = (
        [(p, m) for p, m, _ in task.eval_examples(cfg.eval.num_questions)]
        if callable(getattr(task, "eval_examples", None))
        else []
    )
    check_vlm_prompts(model, processor, evaluated, cfg.eval.max_new_tokens, "eval.max_new_tokens")
    model.train()
    tc = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = common.make_optimizer(params, tc)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: common.lr_multiplier(s, cfg))

    start, ckpt = 0, None
    t_train, n_tokens = 0.0, 0  # running totals over the whole run, kept in the checkpoints
    guard = common.NonFiniteGuard()  # skips non-finite gradient steps, stops after 5 in a row
    found, data_files, base = common.resume_point(cfg, task, ckpt_dir)
    if found:
        ckpt, state = found
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = state["step"]
        t_train, n_tokens = state.get("time_train_total", 0.0), state.get("response_tokens", 0)  # older: none
        guard.load_state_dict(state.get("nonfinite_guard") or {})
    # start-up succeeded: only now is anything written into output_dir
    logger = common.open_run(cfg, start, checkpoint=ckpt)

    def run_eval(step: int) -> dict[str, float]:
        m = common.evaluate_task(
            task, cfg, model, processor, cfg.eval, run_dir, step, seed=cfg.seed, hook="evaluate_model"
        )
        logger.log_eval(step, m)
        return m

    for at in common.evaluations_due(cfg, start):  # the base; or a finished run's missing final evaluation
        run_eval(at)
    bar = common.step_bar(cfg, start, "sft")
    stopping = 0  # the signal that stopped the run early (StopRequest)
    with StopRequest() as stop:
        for step in bar:
            # 2. a fresh batch of training examples and their target responses
            t0 = time.perf_counter()
            examples = task.sft_examples(tc.batch_size, torch.Generator().manual_seed(derive_seed(cfg.seed, step)))
            prompts, metadata, targets = (list(x) for x in zip(*examples))
            batch = encode_sft(processor, prompts, metadata, targets)
            # input_ids / attention_mask / mm_token_type_ids / labels [B, L]; pixel_values [N_patches, D]
            # (digit_sum: [B * 8, 1176]); image_grid_thw [N_images, 3]; labels are -100 outside the response

            # 3. cross-entropy on response tokens only (the model shifts labels by one)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = tc.max_grad_norm if tc.max_grad_norm > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            lr = optimizer.param_groups[0]["lr"]
            stepped = guard.ok(grad_norm)  # a NaN / inf gradient: no step (counted); 5 in a row stop the run
            if stepped:
                optimizer.step()
            scheduler.step()
            dt = time.perf_counter() - t0
            t_train += dt
            n_tokens += int((batch["labels"] != -100).sum())

            # 4. log, evaluate, checkpoint
            done = step + 1
            if done == cfg.max_steps:
                guard.check_last_step()
            if done % cfg.log.every == 0 or done == cfg.max_steps:
                logger.log(
                    done,
                    {
                        "loss/sft": loss.item(),
                        "train/lr": lr,
                        "grad/norm": grad_norm,
                        "time/step": dt,
                        "time/train_total": t_train,
                        "train/response_tokens": n_tokens,
                        "train/nonfinite_steps_skipped": int(not stepped),
                    },
                )
            if cfg.log.progress_bar:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}", refresh=False)
            if done == cfg.max_steps or (cfg.eval.every and done % cfg.eval.every == 0):
                m = run_eval(done)
                if cfg.log.progress_bar and "eval/accuracy" in m:  # none without held-out data
                    bar.write(f"step {done}: held-out accuracy {m['eval/accuracy']:.3f}")
            stopping = stop.requested()  # SIGTERM / Ctrl-C: checkpoint this step, then stop
            if done == cfg.max_steps or stopping or (cfg.checkpoint.every and done % cfg.checkpoint.every == 0):
                common.check_finite(model.named_parameters())
                save_checkpoint(
                    ckpt_dir,
                    done,
                    {
                        "step": done,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "response_tokens": n_tokens,
                        "time_train_total": t_train,
                        "nonfinite_guard": guard.state_dict(),
                        "data_files": data_files,
                    },
                    cfg.checkpoint.keep_last,
                    common.checkpoint_record(cfg, base),
                )
            if stopping:
                break
    bar.close()
    logger.close()
    if stopping:
        raise Preempted(done, checkpoint_path(ckpt_dir, done), stopping, cfg.resume)

    # 5. the final model (model + processor), loadable by an RL config: policy.model=<output_dir>/model
    model_dir = save_model_dir(
        model.eval(),
        processor,
        os.path.join(run_dir, "model"),
        {
            "task": cfg.task,
            "trained": True,
            "sft_steps": cfg.max_steps,
            "base": model_path,
            "seed": cfg.seed,
            "final_lr": optimizer.param_groups[0]["lr"],
        },
    )
    return {**common.write_final_metrics(cfg), "model_dir": model_dir}
