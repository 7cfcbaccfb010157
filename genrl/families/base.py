"""What a model family tells the flow policy: how to condition, noise, denoise and decode.

A *family* wraps one loaded diffusers pipeline (SD3, FLUX, Qwen-Image, Wan, ...) and exposes
the few operations the policy needs, in the pipeline's own conventions, so that with
``eta = 0`` genrl's sampler reproduces the pipeline's own output for the same seed and prompt:

* ``encode(prompts)``: text conditioning, a dict of per-sample tensors ``[B, ...]`` (cached once
  per prompt by the policy; ``collate`` re-batches cached rows);
* ``noise_shape`` / ``pack``: the pipeline's initial-noise shape for one sample, and the map to
  the layout the denoiser works in (FLUX and Qwen-Image pack 2x2 patches);
* ``sigmas(num_steps)``: the pipeline's sigma schedule (shift, dynamic shift), ``[N + 1]``;
* ``forward(model, x, sigma, cond)``: the denoiser's velocity ``noise - x0`` in fp32;
* ``decode(x)``: images ``[B, C, H, W]`` or videos ``[B, F, C, H, W]`` in ``[0, 1]`` for rewards.

Classifier-free guidance is ``velocity``: by default the negative and positive conditions
go through one batched forward, as SD3/FLUX/Wan pipelines do; a family whose pipeline guides
differently (Qwen-Image's norm-preserving CFG) overrides it.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from typing import ClassVar, Optional, Union

import torch

from genrl.hub import check_exists, is_path, load_failure, local_only
from genrl.io import read_json
from genrl.registry import FAMILIES, is_import_path
from pipelines import PIPELINE_MODULES

# what policy.model takes, for the errors of a model that is none of them
MODEL_FORMS = "a hub id has the form 'org/name'; give a diffusers pipeline folder, a hub id or task:<name>"

# The MMDiT joint attention's image (to_*) and text (add_*, to_add_out) projections: the LoRA targets
# Flow-GRPO uses for SD3.5 (scripts/train_sd3.py), and the core of its FLUX and Qwen-Image lists
JOINT_ATTENTION_LORA: tuple[str, ...] = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out")  # fmt: skip


CFG_GRADS = ("both", "cond")  # policy.cfg_grad
# PolicyConfig fields that only some families read (Family.reads_options says which)
FAMILY_OPTIONS: tuple[str, ...] = ("height", "width", "num_frames", "max_sequence_length", "embedded_guidance")


def classifier_free_guidance(
    v_uncond: torch.Tensor, v_cond: torch.Tensor, guidance_scale: float, cfg_grad: str = "both"
) -> torch.Tensor:
    """``v_u + g (v_c - v_u)``, each ``[B, ...]`` (velocity, epsilon or v: the network's output).

    ``cfg_grad="cond"`` stops the gradient through the unconditional branch (``v_u`` detached), as
    Flow-GRPO's update does (yifan123/flow_grpo ``scripts/train_sd3.py``, ``compute_log_prob``, commit
    ac4c86e): the values are the same, the gradient is ``g dv_c`` instead of ``g dv_c - (g - 1) dv_u``.
    ``"both"`` (the default) differentiates the guided output as it is. Raises ``ValueError`` otherwise."""
    if cfg_grad not in CFG_GRADS:
        raise ValueError(f"cfg_grad={cfg_grad!r}; valid: {', '.join(CFG_GRADS)}")
    if cfg_grad == "cond":
        v_uncond = v_uncond.detach()
    return v_uncond + guidance_scale * (v_cond - v_uncond)


def true_cfg(guidance_scale: float) -> dict:
    """The ``__call__`` arguments of the pipelines whose classifier-free guidance is "true CFG" (FLUX, Qwen-Image):
    ``true_cfg_scale`` with genrl's unconditional caption ``negative_prompt=""`` when ``guidance_scale > 1``
    (without a negative prompt they run no CFG), else none."""
    return {"true_cfg_scale": guidance_scale, "negative_prompt": ""} if guidance_scale > 1 else {}


def guidance_branches(forward, x, t, pos: dict, neg: dict, cfg_grad: str = "both"):
    """``(out_uncond, out_cond)`` of ``forward(x, t, cond)`` (each ``[B, ...]``) for classifier-free guidance.

    One batched ``[neg, pos]`` forward, as the diffusers pipelines run it, except under ``cfg_grad="cond"``:
    then the unconditional branch gets its own forward without a graph and the conditional one its own
    (with a graph when autograd records), in rollouts too, so that the update re-scores a rollout's actions
    with the same forwards. The values are the same as batched up to float rounding (other batch shapes);
    the update's backward runs through half the batch and keeps half the activations. Measured on the
    SD3.5-Medium architecture (H200, bf16, ``benchmarks/RESULTS.md``): detaching the branch after a batched
    forward, as Flow-GRPO's ``compute_log_prob`` does, saved neither time nor memory. ``ValueError`` when
    ``pos`` and ``neg`` hold different keys."""
    if pos.keys() != neg.keys():
        raise ValueError(
            f"classifier-free guidance needs the same conditioning keys for both branches: {sorted(pos)} "
            f"(conditional) against {sorted(neg)} (unconditional, given as neg_<key>)"
        )
    if cfg_grad == "cond":
        with torch.no_grad():
            out_u = forward(x, t, neg)
        return out_u, forward(x, t, pos)
    both = {k: torch.cat([neg[k], v]) for k, v in pos.items()}
    return forward(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)


def split_guidance(cond: dict) -> tuple[dict, dict]:
    """A conditioning dict with ``neg_<key>`` entries -> ``(pos, neg)``, each keyed by the plain names."""
    pos = {k: v for k, v in cond.items() if not k.startswith("neg_")}
    return pos, {k[4:]: v for k, v in cond.items() if k.startswith("neg_")}


class Family:
    """Base class; subclasses register with ``@FAMILIES.register(name)``."""

    pipeline_classes: ClassVar[tuple[str, ...]] = ()  # diffusers pipeline class names this family drives
    lora_targets: ClassVar[tuple[str, ...]] = ()  # default LoRA target modules of the denoiser
    video: ClassVar[bool] = False
    # the FAMILY_OPTIONS this family reads; the others must keep their defaults. A family of the user's
    # own package deriving from Family reads them all unless it says; one deriving from a built-in
    # family inherits that family's list: declare ``options`` when it reads more
    options: ClassVar[tuple[str, ...]] = FAMILY_OPTIONS

    def __init__(self, pipe, cfg):
        self.pipe = pipe
        self.cfg = cfg  # PolicyConfig: height, width, num_frames, max_sequence_length, embedded_guidance
        from genrl.config import ConfigError

        try:
            self.check_options(cfg, self.reads_options())
        except ConfigError as e:
            raise e.prefixed("policy") from None

    @classmethod
    def may_read(cls) -> tuple[str, ...]:
        """The ``FAMILY_OPTIONS`` some model of this family reads (``options``): what config validation
        checks, before any weights load; ``reads_options`` may narrow it for the loaded pipeline."""
        return cls.options

    def reads_options(self) -> tuple[str, ...]:
        """The ``FAMILY_OPTIONS`` this family reads for this pipeline (``options``; FLUX adds
        ``embedded_guidance`` for guidance-distilled transformers only)."""
        return self.options

    @classmethod
    def check_options(cls, cfg, read: tuple[str, ...]) -> None:
        """``ConfigError`` (one line, the key relative to ``policy``) for a ``FAMILY_OPTIONS`` setting of
        ``cfg`` (a ``PolicyConfig``) away from its default that is not in ``read``: it would change nothing
        (``policy.height`` on the 8x8 digits model)."""
        from genrl.config import ConfigError, default_of

        for name in FAMILY_OPTIONS:
            value, default = getattr(cfg, name), default_of(cfg, name)
            if name not in read and value != default:
                raise ConfigError(
                    name,
                    f"the {cls.__name__} model does not read it (it reads: "
                    f"{', '.join(read) or 'none of ' + ', '.join(FAMILY_OPTIONS)}); remove it, or set it back to "
                    f"its default ({default!r})",
                    value,
                )

    # ----------------------------------------------------------------- components
    @property
    def denoiser(self) -> torch.nn.Module:
        """The trained network (the pipeline's ``transformer``; ``unet`` for UNet families)."""
        return self.pipe.transformer

    def text_modules(self) -> list[torch.nn.Module]:
        """Frozen modules used only to encode prompts (moved to the device, never trained)."""
        return [
            m
            for n in ("text_encoder", "text_encoder_2", "text_encoder_3")
            if (m := getattr(self.pipe, n, None)) is not None
        ]

    def decode_modules(self) -> list[torch.nn.Module]:
        """Frozen modules used to decode latents (the VAE)."""
        return [self.pipe.vae] if getattr(self.pipe, "vae", None) is not None else []

    def frozen_modules(self) -> list[torch.nn.Module]:
        """Other frozen networks the denoising loop calls (Wan2.2's low-noise expert)."""
        return []

    @property
    def scheduler(self):
        return self.pipe.scheduler

    # ----------------------------------------------------------------- the family's operations
    def encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def collate(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Cached per-prompt rows -> a batch. Families with variable-length text pad here."""
        return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of one sample's initial noise as the pipeline draws it (before ``pack``)."""
        raise NotImplementedError

    def pack(self, noise: torch.Tensor) -> torch.Tensor:
        """``[B, *noise_shape]`` -> the denoiser's latent layout (identity unless packed)."""
        return noise

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The pipeline's ``num_steps + 1`` sigmas, from about 1 down to 0. [N + 1]"""
        self.scheduler.set_timesteps(num_steps, device="cpu")
        return self.scheduler.sigmas.float().clone()

    def shift_mu(self, calculate_shift, image_seq_len: int, max_shift: float = 1.15) -> float:
        """``mu`` of dynamic (resolution-dependent) shifting for ``image_seq_len`` latent tokens: the
        pipeline's own ``calculate_shift`` (diffusers) fed from the scheduler config, with the
        pipelines' defaults for missing keys (``max_shift``: 1.15 in FLUX / Qwen-Image, 1.16 in SD3)."""
        c = self.scheduler.config
        return calculate_shift(
            image_seq_len,
            c.get("base_image_seq_len", 256),
            c.get("max_image_seq_len", 4096),
            c.get("base_shift", 0.5),
            c.get("max_shift", max_shift),
        )

    def forward(self, model, x: torch.Tensor, sigma: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def velocity(self, model, x, sigma, cond, guidance_scale: float, cfg_grad: str = "both") -> torch.Tensor:
        """Velocity ``[B, ...]`` in fp32, with classifier-free guidance when ``guidance_scale > 1``
        (``cond`` then also holds ``neg_<key>`` entries); ``cfg_grad`` as in :func:`classifier_free_guidance`."""
        pos, neg = split_guidance(cond)
        if guidance_scale <= 1.0:
            return self.forward(model, x, sigma, pos)
        v_u, v_c = guidance_branches(functools.partial(self.forward, model), x, sigma, pos, neg, cfg_grad)
        return classifier_free_guidance(v_u, v_c, guidance_scale, cfg_grad)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # the pipeline components the family sets so that the pipeline samples as genrl does (a swapped scheduler, a
    # guider with genrl's scale): an adapter export ships them beside the adapter, as the base pipeline lacks them
    sampling_components: tuple[str, ...] = ()

    def prepare_export(self, num_steps: int, guidance_scale: float) -> dict:
        """Set the pipeline up to sample as genrl's ODE evaluation does with ``num_steps`` and
        ``guidance_scale``, and return the keyword arguments of its ``__call__`` that complete it: what
        ``genrl export`` saves and records as ``sampling`` (it adds the policy's sizes and text length).
        Default: diffusers' ``num_inference_steps`` and ``guidance_scale`` (CFG with the empty negative prompt
        these pipelines default to: SD3, Wan, the embedded pipelines); a family whose pipeline takes its
        guidance otherwise overrides it (FLUX, Qwen-Image, HunyuanVideo-1.5)."""
        return {"num_inference_steps": num_steps, "guidance_scale": guidance_scale}

    def check_num_frames(self, num_frames: int, default: int) -> None:
        """``ValueError`` naming ``policy.num_frames`` unless it is ``t k + 1`` frames, ``t`` the VAE's temporal
        factor: the pipelines floor another count to ``(n - 1) // t * t + 1`` frames, silently (a video
        pipeline's default count is ``default``)."""
        t = self.pipe.vae_scale_factor_temporal
        if (num_frames - 1) % t:
            raise ValueError(
                f"policy.num_frames={num_frames}: this {type(self.pipe).__name__} takes {t}k + 1 frames "
                f"(e.g. its default, {default})"
            )

    def encode_images(self, samples: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`decode`: images ``[B, 3, H, W]`` (videos ``[B, F, 3, H, W]``) in
        ``[0, 1]`` -> clean latents ``x0`` in the denoiser's layout, as the family's training
        scripts make them (the VAE posterior's mode, shifted and scaled as in ``decode``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot encode images into latents yet")

    def vae_mode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``vae.encode(pixels).latent_dist.mode()`` in fp32 for pixels in ``[-1, 1]`` in the VAE's
        layout (the mode, not a sample: deterministic, and the SD-family posteriors' std is tiny)."""
        vae = self.pipe.vae
        return vae.encode(pixels.to(vae.dtype)).latent_dist.mode().float()

    # ----------------------------------------------------------------- helpers for subclasses
    @property
    def dtype(self) -> torch.dtype:
        """The denoiser's dtype (its frozen weights'), read once per denoiser: diffusers'
        ``ModelMixin.dtype`` walks every submodule on each call, ~3 ms per forward of the digits
        model with LoRA (6% of a rollout). The policy casts the denoiser before its first forward."""
        cached = getattr(self, "_dtype", None)
        if cached is None or cached[0] is not self.denoiser:
            cached = self._dtype = (self.denoiser, self.denoiser.dtype)
        return cached[1]

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """``sigma * num_train_timesteps`` (SD3/Wan); families feeding sigma itself override."""
        return sigma * self.scheduler.config.num_train_timesteps


# ----------------------------------------------------------------------------- loading


def _model_index(path: str) -> Optional[dict]:
    """A folder's ``model_index.json`` (None without one); ``ValueError`` naming the file when it is not
    a readable JSON object."""
    index = os.path.join(path, "model_index.json")
    if not os.path.isfile(index):
        return None
    data = read_json(index)
    if not isinstance(data, dict):
        raise ValueError(f"{index} holds a JSON {type(data).__name__}, not an object naming the pipeline's parts")
    return data


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


def check_pipeline_folder(path: str) -> None:
    """A local diffusers folder whose parts are missing (an interrupted download or copy) is a
    ``ValueError`` naming the part, found without loading anything: every component ``model_index.json``
    names has its folder; a model's folder (one holding ``config.json``) holds weights, and not only a
    variant's (``diffusion_pytorch_model.fp16.safetensors``, as ``save_pretrained(variant="fp16")`` or
    ``from_pretrained(variant="fp16")`` leave it: genrl loads the default weights, as diffusers does
    without ``variant``); every shard a ``*.index.json`` lists is there. The libraries' own errors came
    only once the earlier components had loaded (``genrl compare``: after the earlier arms had trained).
    Messages name the part relative to ``path``. A folder without ``model_index.json`` is left to the
    loader."""
    for name, spec in (_model_index(path) or {}).items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or None in spec:
            continue
        folder = os.path.join(path, name)
        if not os.path.isdir(folder):
            raise ValueError(f"model_index.json names component {name!r} ({spec[1]}), but the folder has no {name}/")
        listed = os.listdir(folder)
        files = {f for f in listed if os.path.exists(os.path.join(folder, f))}  # a dangling link: absent
        if dangling := sorted(f for f in set(listed) - files if f.endswith(WEIGHT_SUFFIXES)):
            # a hub cache snapshot whose blob never arrived (an interrupted download)
            target = os.readlink(os.path.join(folder, dangling[0]))
            raise ValueError(f"{name}/{dangling[0]} is a link to a file that is not there ({target})")
        for index in sorted(f for f in files if f.endswith(".index.json")):
            try:
                with open(os.path.join(folder, index), encoding="utf-8") as f:
                    shards = set(json.load(f)["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{name}/{index} is not a readable shard index ({type(e).__name__}: {e})") from None
            if missing := sorted(shards - files):
                raise ValueError(
                    f"{name}/{index} lists {len(missing)} shard(s) that are not there: {', '.join(missing)}"
                )
        weights = sorted(f for f in files if f.endswith(WEIGHT_SUFFIXES))
        if "config.json" not in files:  # a tokenizer, scheduler or processor folder: no weights to check
            continue
        if not weights:
            raise ValueError(f"{name}/ holds config.json but no weights (*.safetensors, *.bin)")
        # a variant's file: 'model.fp16.safetensors', 'model.fp16-00001-of-00002.safetensors'
        if all("." in os.path.splitext(f)[0] for f in weights):
            raise ValueError(
                f"{name}/ holds only a variant's weights ({', '.join(weights)}); genrl loads the default "
                "weights: save the pipeline again without a variant (DiffusionPipeline.from_pretrained(path, "
                "variant=...).save_pretrained(new_path))"
            )


def check_model_folder(cfg) -> None:
    """Config validation of ``policy.model`` (a ``PolicyConfig``, every denoising policy): a local diffusers
    folder with missing parts is a ``ConfigError`` at key ``model`` (``check_pipeline_folder``)."""
    from genrl.config import ConfigError

    if os.path.isdir(cfg.model):
        try:
            check_pipeline_folder(cfg.model)
        except ValueError as e:
            raise ConfigError("model", str(e), cfg.model) from None


def _class_name(path: str) -> Optional[str]:
    """The pipeline class a diffusers folder names in ``model_index.json`` (its last part when it is a
    ``[module, class]`` pair, as a custom pipeline's export writes it); None without the file."""
    name = (_model_index(path) or {}).get("_class_name")
    return name[-1] if isinstance(name, list) and name else name


def load_own_pipeline(cls, path: str):
    """A folder of one of genrl's own pipeline classes (``pipelines/``) -> ``cls`` built from its
    components, each loaded by the library class ``model_index.json`` names (diffusers / transformers
    ``from_pretrained``, subfolder per component; float32: the policy casts them). Ours rather than
    ``cls.from_pretrained``: for an exported folder (``_class_name: [pipeline, DigitsPipeline]``, the
    pipeline code beside it for stock diffusers) diffusers would insist on running that folder's
    ``pipeline.py``, and genrl never runs code from a data folder."""
    import diffusers
    import transformers

    libraries = {"diffusers": diffusers, "transformers": transformers}
    components = {}
    for name, spec in (_model_index(path) or {}).items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        library, class_name = spec
        component_cls = getattr(libraries.get(library), str(class_name), None)
        if not hasattr(component_cls, "from_pretrained"):
            raise ValueError(
                f"{path}/model_index.json: component {name!r} is {spec}, not a diffusers / transformers class"
            )
        components[name] = component_cls.from_pretrained(path, subfolder=name)
    return cls(**components)


def family_named(name: str, pipeline_class: Optional[str]) -> Optional[type[Family]]:
    """The family for a pipeline of class ``pipeline_class`` (None: not known yet) and ``policy.family``
    ``name``: ``auto`` = the registered family whose ``pipeline_classes`` holds it (None while the class
    is unknown). ``ConfigError`` at key ``family`` for a class no family drives, or a registered family
    (by name or import path) that does not derive from the one that drives it (FLUX's code on the digits
    model); a family of the user's own package may drive any class."""
    from genrl.config import ConfigError

    driver = next((n for n in FAMILIES.names() if pipeline_class in FAMILIES.get(n).pipeline_classes), None)
    if name != "auto":
        family = FAMILIES.get(name)
        if not (isinstance(family, type) and issubclass(family, Family)):  # a plug-in's class: it derives from Family
            raise ConfigError("family", "not a model family (a subclass of genrl.families.base.Family)", name)
        builtin = not is_import_path(name) or any(FAMILIES.get(n) is family for n in FAMILIES.names())
        if driver is not None and builtin and not issubclass(family, FAMILIES.get(driver)):
            raise ConfigError(
                "family",
                f"the model is a {pipeline_class}, which family {driver!r} drives; set policy.family=auto "
                f"(or a family deriving from {driver!r})",
                name,
            )
        return family
    if pipeline_class is None or driver is not None:
        return FAMILIES.get(driver) if driver else None
    known = sorted(c for n in FAMILIES.names() for c in FAMILIES.get(n).pipeline_classes)
    raise ConfigError(
        "family",
        f"no genrl family drives {pipeline_class}; set policy.family to one of {', '.join(FAMILIES.names())} "
        f"or load one of: {', '.join(known)}",
        name,
    )


def family_for(pipe, name: str = "auto") -> type[Family]:
    """The family class for a loaded pipeline: by ``name``, or ``auto`` = by its class name (``family_named``;
    its ``ConfigError`` with the key ``policy.family``)."""
    from genrl.config import ConfigError

    try:
        return family_named(name, type(pipe).__name__)
    except ConfigError as e:
        raise e.prefixed("policy") from None


def family_before_loading(cfg) -> Optional[type[Family]]:
    """The family class ``cfg`` (a ``PolicyConfig``) will drive, found without loading or building any
    model (``family_named`` of ``policy.family`` and the model's pipeline class: for ``task:<name>`` the
    embedded task's ``pipeline_class``; for a local folder the class its ``model_index.json`` names, or
    ``DigitsPipeline`` for the digits layout). None where only loading tells (a hub id under ``auto``).
    ``ConfigError`` at key ``model`` for an unknown task or a folder whose ``model_index.json`` is broken."""
    from genrl.config import ConfigError
    from genrl.families.digits import is_digits_folder
    from genrl.models import SFT, TASK, model_task

    try:
        if cfg.model.startswith(TASK):
            cls_name = getattr(model_task(cfg.model[len(TASK) :]), "pipeline_class", None)
        elif cfg.model.startswith(SFT):
            cls_name = None  # an SFT run's model: a VLM, refused by the policy that loads it
        elif is_path(cfg.model) and not os.path.isdir(cfg.model):
            raise ValueError(f"no such folder ({MODEL_FORMS})")
        else:
            cls_name = "DigitsPipeline" if is_digits_folder(cfg.model) else _class_name(cfg.model)
    except (OSError, ValueError) as e:  # an unknown task or one without a model, a damaged model_index.json
        raise ConfigError("model", " ".join(str(e).split()), cfg.model) from None
    return family_named(cfg.family, cls_name if isinstance(cls_name, str) else None)


def check_family_options(cfg) -> None:
    """Config validation of ``policy.name=flow`` (``check_config``): the family options (``FAMILY_OPTIONS``)
    that no model of the config's family reads are refused before anything is built or loaded, where
    the family is known by then (``family_before_loading``); the loaded family checks again."""
    family = family_before_loading(cfg)
    if family is not None:
        family.check_options(cfg, family.may_read())


def load_pipeline(model: str, dtype: Union[torch.dtype, dict[str, torch.dtype]]):
    """A local diffusers folder or hub id -> the pipeline, through diffusers' own
    ``DiffusionPipeline.from_pretrained`` in ``dtype`` (a torch dtype, or diffusers' per-component dict;
    a folder of one of genrl's own classes, ``pipelines/``, through :func:`load_own_pipeline`, in float32:
    diffusers resolves only its own names). A hub id that is not in the local cache, with no
    network, is a clear error naming the fix (download first) instead of a stack of retries."""
    from diffusers import DiffusionPipeline

    local = os.path.isdir(model)
    if not local and is_path(model):
        raise ValueError(f"policy.model={model!r} is not a folder ({MODEL_FORMS})")
    own = _class_name(model) if local else None
    if local and own is None:
        what = "names no _class_name" if os.path.isfile(os.path.join(model, "model_index.json")) else "is missing"
        raise ValueError(
            f"policy.model={model!r}: the folder's model_index.json {what}; a diffusers pipeline folder "
            "is expected (what `save_pretrained` or `hf download` writes)"
        )
    if isinstance(own, str) and own in PIPELINE_MODULES:  # genrl's own classes (pipelines/)
        return load_own_pipeline(getattr(importlib.import_module(PIPELINE_MODULES[own]), own), model)
    if not local:
        check_exists("policy.model", model)  # online: one request refuses a repository the hub lacks; offline: none
    try:  # a hub id with no network: the cache only, at once (no retries, no "Couldn't connect" warning)
        return DiffusionPipeline.from_pretrained(model, dtype=dtype, local_files_only=not local and local_only())
    except (OSError, ValueError) as e:  # ValueError: diffusers' own check of the parts found
        if local or isinstance(e, ValueError):
            raise ValueError(f"policy.model={model!r}: could not load the diffusers pipeline: {e}") from e
        raise ValueError(load_failure("policy.model", model, e)) from e
