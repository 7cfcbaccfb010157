"""A vision-language model (Qwen-VL family) as a token-level stochastic policy.

Every generated token is an action: a rollout samples a response to an (image, question)
prompt and records, per response token, its log-prob, a mask (1 up to and including the
end-of-turn token) and the entropy. The update re-scores the stored responses with one
teacher-forced, batched forward over prompt + response.

Conventions (decided here, documented for the objectives):

* **Temperature in log-probs.** Log-probs are ``log_softmax(logits / temperature)`` with
  the never-sampled vision tokens masked out (their logits set to ``-inf``), in rollout
  *and* in :meth:`VLMPolicy.log_prob`, so old and new log-probs describe the same
  distribution (TRL and verl divide by the temperature the same way). Top-p truncation is
  applied when sampling but is **not** part of the log-probs (as in TRL/verl); keep
  ``top_p = 1`` for exactly on-policy ratios.
* **Old log-probs are recomputed.** Sampling runs an incremental loop with a KV cache,
  whose logits differ from a full forward in the last bits. ``log_probs_old`` is
  therefore computed after sampling by the same teacher-forced forward that
  :meth:`VLMPolicy.log_prob` uses (verl's "recompute old log-prob"), so with unchanged
  weights the ratio is exactly 1 for the same batch layout. The sampling loop's own
  log-probs are kept in ``step_info["rollout_log_probs"]`` (they agree to ~1e-6).
* **Fixed response width.** Responses are right-padded to ``max_new_tokens`` so rollout
  chunks of one iteration have the same ``T`` and concatenate (``Trajectory.cat``);
  prompts are left-padded to the batch's longest, or to ``max_prompt_length`` when set
  (needed when rollout chunks of one step may differ in prompt length).
* **Positions.** Qwen-VL uses 3-D multimodal RoPE. Positions come from the model's own
  ``get_rope_index`` on the prompt (and, for re-scoring, on prompt + response) and are
  passed explicitly, so nothing depends on the model's cached ``rope_deltas`` state;
  generated tokens continue at ``max(prompt positions) + 1``.
* **Images.** A prompt's metadata holds ``image`` (one PIL image) or ``images`` (several);
  ``<image>`` in the prompt text places each one (the EasyR1/MMR1 data convention), otherwise
  they precede the question. Pixels and grids are kept per sample, as lists in
  ``Trajectory.data`` (image sizes differ), so rollout chunks concatenate whatever their images.
* **Dropout off.** The module is put in eval mode: re-scoring must reproduce the rollout.

Reference model: LoRA adapters disabled (``rank > 0``) or a frozen copy (full fine-tuning).
With ``freeze_vision = false`` the vision tower is trained too: by LoRA adapters on its
linear layers (so disabling adapters still gives the exact reference) or in full.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import os
from collections.abc import Sequence
from typing import Optional

import torch

from genrl.hub import check_exists, is_path, load_failure
from genrl.models import resolve_model
from genrl.policies.base import DTYPES, Policy
from genrl.registry import POLICIES
from genrl.trajectory import Trajectory
from genrl.vlm_batching import (
    NEVER_SAMPLE_TOKENS,
    chat_prompts,
    check_next_token_scores,
    check_vlm_prompts,
    end_token_ids,
    prompt_lengths,
)

# model_type (config.json) -> transformers class name. Extend only after checking that the
# class takes ``mm_token_type_ids`` / 3-D positions like Qwen2-VL (see module docstring).
SUPPORTED_MODELS: dict[str, str] = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
}
# the language model's linear layers (by last name) that get LoRA adapters by default (VLMLoraConfig)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ----------------------------------------------------------------------------- loading


def resolve_model_path(model: str) -> str:
    """``task:<name>`` / ``sft:<config.yaml>`` -> that model's folder (``genrl.models``; built by
    ``genrl prepare``, never here); a local folder as is; otherwise a hub id (must already be in
    the local Hugging Face cache when there is no network)."""
    if model.startswith(("task:", "sft:")):
        return resolve_model(model)
    looks_local = is_path(model)
    if looks_local and not os.path.isdir(os.path.expanduser(model)):
        raise ValueError(
            f"policy.model={model!r}: no such folder. Expected a local transformers folder with config.json, "
            f"model weights and processor files, a hub id such as 'Qwen/Qwen2-VL-2B-Instruct', or 'task:<name>'."
        )
    return os.path.expanduser(model) if looks_local else model


def model_class_for(config) -> type:
    """The transformers class for a loaded ``config``: by ``model_type``, else by ``architectures``."""
    import transformers

    name = SUPPORTED_MODELS.get(getattr(config, "model_type", None))
    if name is None:
        archs = [a for a in (getattr(config, "architectures", None) or []) if a in SUPPORTED_MODELS.values()]
        name = archs[0] if archs else None
    if name is None:
        raise ValueError(
            f"unsupported VLM: model_type={getattr(config, 'model_type', None)!r}, "
            f"architectures={getattr(config, 'architectures', None)}; supported model types: "
            + ", ".join(f"{k} ({v})" for k, v in SUPPORTED_MODELS.items())
        )
    cls = getattr(transformers, name, None)
    if cls is None:
        raise ValueError(f"{name} is not available in transformers {transformers.__version__}; upgrade transformers")
    return cls


def load_components(path: str, dtype: torch.dtype = torch.float32, key: str = "policy.model") -> dict:
    """Model and processor loaded with the real ``from_pretrained`` of their classes; ``key`` is the
    config key naming ``path`` (for the error: ``ValueError``, one line)."""
    from transformers import AutoConfig, AutoProcessor

    local = os.path.isdir(path)
    if not local:
        check_exists(key, path)  # online: one request refuses a repository the hub lacks; offline: none (genrl.hub)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        if local:
            raise ValueError(f"{key}={path!r}: not a transformers model folder ({' '.join(str(e).split())})") from e
        raise ValueError(load_failure(key, path, e)) from e
    cls = model_class_for(config)
    return {"model": cls.from_pretrained(path, dtype=dtype), "processor": AutoProcessor.from_pretrained(path)}


def _find_vision_tower(module: torch.nn.Module) -> tuple[Optional[torch.nn.Module], str]:
    """(vision tower, its dotted name prefix) of a Qwen-VL model."""
    inner = getattr(module, "model", module)
    visual = getattr(inner, "visual", None) or getattr(module, "visual", None)
    if visual is None:
        return None, ""
    for name, mod in module.named_modules():
        if mod is visual:
            return visual, name + "."
    return visual, ""


# ----------------------------------------------------------------------------- policy


@POLICIES.register("vlm")
class VLMPolicy(Policy):
    """Token-level stochastic policy over a Qwen-VL model. ``cfg`` is a ``VLMPolicyConfig``."""

    samples = "text"  # its responses

    def __init__(self, cfg, model, processor, device="cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        dtype = DTYPES[cfg.dtype]
        if model.dtype != dtype:
            model = model.to(dtype=dtype)
        model = model.to(self.device).eval()  # no dropout: re-scoring must reproduce the rollout
        visual, visual_prefix = _find_vision_tower(model)
        self.ref_model = None
        if cfg.lora.rank > 0:
            from peft import inject_adapter_in_model

            model.requires_grad_(False)
            targets, names, language = set(cfg.lora.target_modules), [], set()  # language: its linear layers' names
            for name, mod in model.named_modules():
                if not isinstance(mod, torch.nn.Linear):
                    continue
                if visual_prefix and name.startswith(visual_prefix):
                    if not cfg.freeze_vision:
                        names.append(name)
                else:
                    language.add(leaf := name.rsplit(".", 1)[-1])
                    if leaf in targets:
                        names.append(name)
            if unmatched := sorted(targets - language):  # a typo trained the vision tower (or nothing) silently
                raise ValueError(
                    f"policy.lora.target_modules: {unmatched} match no linear layer of the language model "
                    f"(its linear layers: {', '.join(sorted(language))})"
                )
            # peft directly (transformers' add_adapter wants a newer peft); the model keeps its class.
            model = inject_adapter_in_model(cfg.lora.peft_config(names, init_lora_weights=True), model)
            for n, p in model.named_parameters():  # only adapters train; they stay fp32 under mixed precision
                p.requires_grad_("lora_" in n)
                if p.requires_grad:
                    p.data = p.data.float()
            model.eval()  # peft adds its lora_dropout modules in training mode
        else:
            model.requires_grad_(True)
            if cfg.freeze_vision and visual is not None:
                visual.requires_grad_(False)
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        self._module = model
        self.model = model  # what gradient forwards go through; the trainer may wrap it (DDP)
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._build_token_sets()

    @classmethod
    def from_pretrained(cls, cfg, device="cpu") -> "VLMPolicy":
        return cls(cfg, device=device, **load_components(resolve_model_path(cfg.model), DTYPES[cfg.dtype]))

    def _build_token_sets(self) -> None:
        tok, conf = self.tokenizer, self._module.config
        vocab = conf.get_text_config().vocab_size if hasattr(conf, "get_text_config") else conf.vocab_size
        blocked = torch.zeros(vocab, dtype=torch.bool)
        ids = {
            getattr(conf, a, None)
            for a in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        }
        unk = tok.unk_token_id
        for t in NEVER_SAMPLE_TOKENS:
            i = tok.convert_tokens_to_ids(t)
            if i is not None and i != unk:
                ids.add(i)
        for i in ids:
            if i is not None and 0 <= i < vocab:
                blocked[i] = True
        if len(tok) < vocab:  # padded embedding rows have no token
            blocked[len(tok) :] = True
        self.blocked = blocked.to(self.device)
        self.eos_ids = torch.tensor(end_token_ids(self._module, tok), device=self.device)
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else int(self.eos_ids[0])

    # ----------------------------------------------------------------- parameters
    @property
    def module(self) -> torch.nn.Module:
        """The trained network, unwrapped (the trainer wraps it into ``self.model``)."""
        return self._module

    def _set_adapters(self, enabled: bool) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for m in self._module.modules():
            if isinstance(m, BaseTunerLayer):
                m.enable_adapters(enabled)

    def window(self, generator: torch.Generator) -> list[int]:
        """Token policies have no SDE window: every response token is an action."""
        return []

    # ----------------------------------------------------------------- inputs
    def encode_prompts(self, prompts: list[str], metadata: list[dict]) -> dict[str, torch.Tensor]:
        """Chat-templated, LEFT-padded prompts with their images, on the device.
        ``metadata[i]`` holds ``"image"`` (one PIL image) or ``"images"`` (a sequence of them)."""
        texts, images = chat_prompts(self.processor, prompts, metadata)
        flat = [im for ims in images for im in ims]
        L = self.cfg.max_prompt_length
        tok, side = self.tokenizer, self.tokenizer.padding_side
        tok.padding_side = "left"
        try:
            enc = self.processor(
                text=texts,
                images=flat or None,
                return_tensors="pt",
                padding="max_length" if L > 0 else True,
                **({"max_length": L} if L > 0 else {}),
            )
        finally:
            tok.padding_side = side
        ids, am = enc["input_ids"], enc["attention_mask"]
        if L > 0 and ids.shape[1] > L:
            raise ValueError(f"a prompt has {ids.shape[1]} tokens > policy.max_prompt_length={L}")
        mm = enc.get("mm_token_type_ids")
        if mm is None:  # 1 at image tokens, 2 at video tokens, 0 elsewhere
            conf = self._module.config
            mm = (ids == conf.image_token_id).long() + 2 * (ids == getattr(conf, "video_token_id", -1)).long()
        B = len(prompts)
        out = {
            "prompt_ids": ids.to(self.device),
            "prompt_mask": am.to(self.device),
            "prompt_mm_token_type_ids": mm.to(self.device),
        }
        # Images per sample, as lists of B tensors (image sizes differ, so no padding): sample
        # b's patch rows [n_b, D] and grids [c_b, 3], views into the processor's flat output.
        if flat:
            g = enc["image_grid_thw"].to(self.device)  # [N_images, 3]
            pv = enc["pixel_values"].to(self.device)  # [N_patches, D]
            img0 = list(itertools.accumulate((len(ims) for ims in images), initial=0))  # first image of each sample
            row0 = list(itertools.accumulate(g.prod(-1).tolist(), initial=0))  # first patch row of each image
            out["pixel_values"] = [pv[row0[img0[b]] : row0[img0[b + 1]]] for b in range(B)]
            out["image_grid_thw"] = [g[img0[b] : img0[b + 1]] for b in range(B)]
        return out

    def prompt_lengths(self, prompts: Sequence[str], metadata: Sequence[dict]) -> list[int]:
        """Tokens each prompt takes (``genrl.vlm_batching.prompt_lengths`` with this policy's processor)."""
        return prompt_lengths(self.processor, prompts, metadata)

    def check_prompts(self, prompts, max_new_tokens: Optional[int] = None, key: str = "policy.max_new_tokens") -> None:
        """``genrl.vlm_batching.check_vlm_prompts`` with this policy's model and processor: every prompt is
        text the model's tokenizer takes (no lone surrogate, no vision token as text, no word a closed
        vocabulary lacks), fits ``policy.max_prompt_length`` (0: no limit) and leaves room for
        ``max_new_tokens`` (named ``key``; default ``policy.max_new_tokens``) in the model's context; else a
        ``ValueError`` naming the first prompt that does not (``prompt_location``) and how many do not."""
        new = max_new_tokens or self.cfg.max_new_tokens
        check_vlm_prompts(self._module, self.processor, prompts, new, key, self.cfg.max_prompt_length)

    @staticmethod
    def _vision_inputs(data: dict) -> dict:
        """Per-sample pixels and grids -> the model's flat ``pixel_values`` / ``image_grid_thw``."""
        grids = data.get("image_grid_thw")
        if not grids or not any(g.shape[0] for g in grids):
            return {}
        return {
            "pixel_values": torch.cat([p for p in data["pixel_values"] if p.shape[0]]),
            "image_grid_thw": torch.cat([g for g in grids if g.shape[0]]),
        }

    def _forward(self, model, ids, am, mm, vision: dict, **kwargs):
        """``model`` over whole sequences (ids / attention mask / mm_token_type_ids ``[B, L]``, the
        images' ``vision`` inputs) at their 3-D multimodal RoPE positions ``[3, B, L]`` from the
        model's own ``get_rope_index``; ``kwargs`` go to the model. Returns (output, positions)."""
        pos, _ = self._module.model.get_rope_index(
            ids, mm_token_type_ids=mm, image_grid_thw=vision.get("image_grid_thw"), attention_mask=am
        )
        return model(input_ids=ids, attention_mask=am, position_ids=pos, mm_token_type_ids=mm, **kwargs, **vision), pos

    def _adjust(self, logits: torch.Tensor, temperature: Optional[float] = None) -> torch.Tensor:
        """float32 logits / temperature (the policy's unless given) with the never-sampled tokens at -inf."""
        t = self.cfg.temperature if temperature is None else temperature
        return (logits.float() / t).masked_fill(self.blocked, float("-inf"))

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def _generate(
        self,
        enc: dict,
        greedy: bool,
        generator: Optional[torch.Generator],
        max_new_tokens: int,
        temperature: Optional[float] = None,
    ):
        """Incremental decoding with a KV cache through the unwrapped module.
        Returns response ids [B, T], response mask [B, T], sampling log-probs [B, T]."""
        model, cfg = self._module, self.cfg
        ids, am, mm = enc["prompt_ids"], enc["prompt_mask"], enc["prompt_mm_token_type_ids"]
        vision = self._vision_inputs(enc)
        B = ids.shape[0]
        out, pos = self._forward(model, ids, am, mm, vision, use_cache=True, logits_to_keep=1)
        next_pos = pos.amax(dim=(0, 2)) + 1  # [B]
        cache = _cache_of(out)
        logits = out.logits[:, -1]
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        tokens, masks, lps = [], [], []
        for k in range(max_new_tokens):
            lp = torch.log_softmax(check_next_token_scores(self._adjust(logits, temperature)), -1)  # [B, V]
            if greedy:
                tok = lp.argmax(-1)
            else:
                probs = lp.exp()
                if cfg.top_p < 1.0:
                    probs = _top_p_filter(probs, cfg.top_p)
                tok = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(self.device)
            live = ~done
            tok = torch.where(live, tok, torch.full_like(tok, self.pad_id))
            tokens.append(tok)
            masks.append(live)
            lps.append(lp.gather(1, tok[:, None]).squeeze(1).masked_fill(~live, 0.0))
            done = done | torch.isin(tok, self.eos_ids)
            if bool(done.all()) or k == max_new_tokens - 1:
                break
            am = torch.cat([am, live.long()[:, None]], 1)
            step_pos = (next_pos + k).view(1, B, 1).expand(3, B, 1)
            out = model(
                input_ids=tok[:, None],
                attention_mask=am,
                position_ids=step_pos,
                use_cache=True,
                **{self._cache_kw: cache},
            )
            cache = _cache_of(out)
            logits = out.logits[:, -1]
        T = max_new_tokens
        resp = torch.full((B, T), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros(B, T, device=self.device)
        lp_s = torch.zeros(B, T, device=self.device)
        n = len(tokens)
        resp[:, :n] = torch.stack(tokens, 1)
        mask[:, :n] = torch.stack(masks, 1).float()
        lp_s[:, :n] = torch.stack(lps, 1)
        return resp, mask, lp_s

    def decode(self, response_ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """Response strings, special tokens (and padding) skipped."""
        return [
            self.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True).strip()
            for r, m in zip(response_ids.cpu(), mask.cpu())
        ]

    @torch.no_grad()
    def rollout(self, prompts, metadata, group_ids, generator, window=None) -> Trajectory:
        """Sample one response per prompt (``window`` is ignored: every token is an action)."""
        enc = self.encode_prompts(list(prompts), list(metadata))
        resp, mask, lp_sampling = self._generate(
            enc, greedy=False, generator=generator, max_new_tokens=self.cfg.max_new_tokens
        )
        B, T = resp.shape
        data = {
            "input_ids": torch.cat([enc["prompt_ids"], resp], 1),  # [B, P + T]
            "attention_mask": torch.cat([enc["prompt_mask"], mask.long()], 1),
            "mm_token_type_ids": torch.cat([enc["prompt_mm_token_type_ids"], torch.zeros_like(resp)], 1),
            "prompt_length": torch.full((B,), enc["prompt_ids"].shape[1], dtype=torch.long, device=self.device),
            **{k: enc[k] for k in ("pixel_values", "image_grid_thw") if k in enc},
        }
        lp_old, entropy = self._token_log_probs(self._module, data, slice(0, T), with_entropy=True)
        return Trajectory(
            log_probs_old=lp_old,  # [B, T]; padding entries hold the pad token's (finite) log-prob, ratio 1
            mask=mask,
            group_ids=torch.as_tensor(group_ids, device=self.device),
            step_info={
                "step_index": torch.arange(T, device=self.device).expand(B, -1),  # token position in the response
                "entropy": entropy * mask,
                "rollout_log_probs": lp_sampling,  # the KV-cache sampling loop's own (diagnostic)
            },
            data=data,
            samples=self.decode(resp, mask),
            prompts=list(prompts),
            metadata=list(metadata),
        )

    # ----------------------------------------------------------------- re-scoring
    def _token_log_probs(self, model, data: dict, steps: slice, with_entropy: bool = False, head_top_k: int = 0):
        """Teacher-forced log-probs ``[B, t]`` of the response tokens ``steps`` under ``model``; with
        ``with_entropy`` also their entropies [B, t], or with ``head_top_k`` > 0 :meth:`head_info`'s dict."""
        if with_entropy and head_top_k > 0:
            raise ValueError("_token_log_probs returns the entropies or the head's outputs, not both")
        ids, am, mm = data["input_ids"], data["attention_mask"], data["mm_token_type_ids"]
        P = int(data["prompt_length"][0])
        T = ids.shape[1] - P
        s0, s1, _ = steps.indices(T)
        vision = self._vision_inputs(data)
        # logits at positions P-1+s0 .. P-2+s1 predict response tokens s0 .. s1-1
        out, _ = self._forward(
            model, ids, am, mm, vision, use_cache=False, logits_to_keep=T + 1 - s0, output_hidden_states=head_top_k > 0
        )
        logits = self._adjust(out.logits[:, : s1 - s0])
        lp_all = torch.log_softmax(logits, -1)
        actions = ids[:, P + s0 : P + s1]
        lp = lp_all.gather(-1, actions[..., None]).squeeze(-1)
        extra = None
        if head_top_k > 0:
            hidden = out.hidden_states[-1][:, P - 1 + s0 : P - 1 + s1]  # the LM head's input at those positions
            extra = self.head_info(hidden, logits, actions, head_top_k)
        if with_entropy:
            p = lp_all.exp()
            extra = -torch.where(p > 0, p * lp_all, torch.zeros_like(p)).sum(-1)
        return lp, extra

    @torch.no_grad()
    def head_info(self, hidden: torch.Tensor, logits: torch.Tensor, actions: torch.Tensor, top_k: int) -> dict:
        """What a model of the language-model head needs (CAPO, ``genrl.objectives.capo``), detached, float32:
        ``hidden`` [B, t, H], the head's input divided by the temperature (so ``W @ hidden`` are the
        logits the log-probs read); ``ids`` [B, t, k] the top-``k`` tokens of each position (``k`` at most
        the number of tokens the policy can sample); ``probs`` [B, t, k] their probabilities renormalised
        over the top-``k``; ``action`` [B, t, k] the sampled token's one-hot among them (all 0 if absent).
        ``logits``: [B, t, V] already divided by the temperature (``_adjust``); ``actions``: [B, t]."""
        k = min(top_k, int((~self.blocked).sum()))
        top, ids = logits.topk(k, dim=-1)  # [B, t, k]
        return {
            "hidden": hidden.detach().float() / self.cfg.temperature,
            "ids": ids,
            "probs": torch.softmax(top, -1),
            "action": (ids == actions[..., None]).float(),
        }

    def head_shape(self) -> tuple[int, int]:
        """``(V, H)``: the language-model head's weight shape (vocabulary rows x hidden width)."""
        weight = self._module.get_output_embeddings().weight
        return int(weight.shape[0]), int(weight.shape[1])

    def log_prob(
        self, traj: Trajectory, steps: slice, with_ref: bool = False, head_top_k: int = 0
    ) -> tuple[torch.Tensor, dict]:
        """Re-score the stored response tokens ``traj[:, steps]`` with the current weights
        (through ``self.model``, with gradients). ``info["ref_log_probs"]`` from the reference
        when ``with_ref`` (for the k1/k3 KL in ``genrl.objectives.common.kl_per_action``);
        ``info["head"]`` (:meth:`head_info`) when ``head_top_k`` > 0 (an objective with state asks for it)."""
        lp, head = self._token_log_probs(self.model, traj.data, steps, head_top_k=head_top_k)
        info = {} if head is None else {"head": head}
        if with_ref:
            with torch.no_grad(), self.reference() as ref:
                info["ref_log_probs"], _ = self._token_log_probs(ref, traj.data, steps)
        return lp, info

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def sample(
        self,
        prompts: list[str],
        metadata: list[dict],
        greedy: bool = True,
        generator: Optional[torch.Generator] = None,
        max_new_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
    ) -> list[str]:
        """Responses for evaluation: greedy (default) or sampled with ``generator`` at
        ``temperature`` (default: the policy's)."""
        enc = self.encode_prompts(list(prompts), list(metadata))
        resp, mask, _ = self._generate(
            enc,
            greedy=greedy,
            generator=generator,
            max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
            temperature=temperature,
        )
        return self.decode(resp, mask)


def _cache_of(out):
    """The KV cache of a model output (``cache`` in transformers >= 5, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail of each row of ``probs`` [B, V] outside the smallest set with mass >= top_p."""
    sorted_p, idx = probs.sort(-1, descending=True)
    cum = sorted_p.cumsum(-1)
    drop = (cum - sorted_p) >= top_p  # keeps at least the most likely token
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter(-1, idx, sorted_p)
