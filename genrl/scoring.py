"""Calling reward functions safely and combining them.

Reward contract (README.md, "Rewards"): ``fn(samples, prompts, metadata) -> dict[str, Tensor[B]]``
holding at least the reward's own name, or a bare ``Tensor[B]`` (taken as the reward's own
values). A reward that raises, returns the wrong shape or
returns NaN must not crash the run nor silently bias it: its values become NaN, the
failure is counted and logged, and the trainer masks those samples out of the update.
"""

from __future__ import annotations

import functools
import inspect
import time
import types
import typing
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Mapping, Optional

import torch

from genrl.models import SFT, SFT_POLICY, TASK, check_model_kind, model_task


class RewardContractError(ValueError):
    """A reward returned something the contract does not allow (no value under its own name, a
    value that is not a number per sample, or not ``[B]``): a bug in the reward, not a fault of
    particular samples, so it is not retried sample by sample."""


def _call_reward(name: str, fn, samples, prompts: list[str], metadata: list[dict]) -> dict[str, torch.Tensor]:
    """One reward call checked against the contract: ``{key: float [B]}`` holding ``name``;
    :class:`RewardContractError` otherwise (an exception the reward raises passes through)."""
    B = len(prompts)
    out = fn(samples, prompts, metadata)
    if not isinstance(out, Mapping):  # a bare [B] of values
        out = {name: out}
    if name not in out:
        raise RewardContractError(f"reward {name!r} returned keys {sorted(map(str, out))} without its own name")
    checked = {}
    for key, v in out.items():
        try:
            v = torch.as_tensor(v, dtype=torch.float32).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as e:
            raise RewardContractError(f"reward {name!r} returned {key!r} that is not numbers ({e})") from None
        if v.shape != (B,):
            raise RewardContractError(
                f"reward {name!r} returned {key!r} of shape {tuple(v.shape)} for {B} samples, expected ({B},)"
            )
        checked[key] = v
    return checked


def _contract_broken(error: RewardContractError, name: str, B: int) -> dict[str, torch.Tensor]:
    """Warn that reward ``name`` breaks its contract; every one of the ``B`` samples NaN."""
    warnings.warn(f"{error}: the reward breaks its contract (README, 'Rewards'); all {B} samples masked")
    return {name: torch.full((B,), float("nan"))}


TOTAL = "total"  # logged as reward/total_mean: the weighted sum of the rewards, which no reward's key may replace


def score_samples(
    rewards: dict, samples, prompts: list[str], metadata: list[dict]
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Run every reward. Returns (values: key -> float [B], failures: reward name -> count of
    samples whose value is not finite: NaN, +-inf, or failed). Every key a reward returns is kept
    (e.g. auxiliary accuracies), except one that names another of ``rewards`` (that reward's own
    values are kept) and ``TOTAL`` (the trainer logs the weighted sum under it; warned). A call that raises is retried one sample at a time, so a fault (one
    corrupt video) costs exactly the samples it belongs to: their values, auxiliary keys too, are NaN.
    A call that breaks the contract (:class:`RewardContractError`: a wrong shape, no own key) is a
    bug of the reward, whatever the samples: not retried, every value NaN, said in the warning.

    A tensor sample holding NaN or inf (a diverged rollout) is NaN in every key of every reward: the
    rewards see it as zeros, so none has to guard against it (a uint8 conversion had turned NaN pixels
    into a black video with an ordinary VideoAlign score)."""
    B = len(prompts)
    values: dict[str, torch.Tensor] = {}
    failures: dict[str, int] = {}
    broken = None  # [B] samples with a non-finite value
    if isinstance(samples, torch.Tensor) and samples.is_floating_point() and B > 0 and samples.shape[:1] == (B,):
        broken = ~torch.isfinite(samples).reshape(B, -1).all(1)
        if broken.any():
            samples = torch.where(broken.view(-1, *[1] * (samples.ndim - 1)), torch.zeros_like(samples), samples)
        broken = broken.cpu()
    for name, fn in rewards.items():
        try:
            out = _call_reward(name, fn, samples, prompts, metadata)
        except RewardContractError as e:  # the reward's own bug: every sample alike, nothing to retry
            out = _contract_broken(e, name, B)
        except Exception as e:  # find the samples at fault; the others keep their values
            rows, bad, broken_contract = [], 0, None
            for i in range(B):
                try:
                    rows.append(_call_reward(name, fn, samples[i : i + 1], prompts[i : i + 1], metadata[i : i + 1]))
                except RewardContractError as contract:  # a bug, not this sample's fault: stop retrying
                    broken_contract = contract
                    break
                except Exception:
                    rows.append({})
                    bad += 1
            if broken_contract is not None:
                out = _contract_broken(broken_contract, name, B)
            else:
                if bad:
                    warnings.warn(f"reward {name!r} failed on {bad} of {B} samples ({type(e).__name__}: {e}); masked")
                else:  # the batch failed, no sample alone did (e.g. out of memory): scored one at a time
                    warnings.warn(
                        f"reward {name!r} failed on the batch of {B} ({type(e).__name__}: {e}) but on none of "
                        "its samples alone: scored one sample at a time, none masked"
                    )
                keys = dict.fromkeys([name, *(k for r in rows for k in r)])
                out = {k: torch.cat([r.get(k, torch.full((1,), float("nan"))) for r in rows]) for k in keys}
        # an auxiliary key that names another reward of this call is left out: that reward's own values
        # win, whichever runs first (a 0-weight reward could otherwise replace a trained one's values)
        if broken is not None and broken.any():
            out = {k: v.masked_fill(broken, float("nan")) for k, v in out.items()}
        if TOTAL in out and name != TOTAL:  # reward/total_mean is the trainer's weighted sum
            warnings.warn(
                f"reward {name!r} returned the key {TOTAL!r}, the weighted sum's name: not logged; rename it"
            )
        values.update({k: v for k, v in out.items() if k == name or (k not in rewards and k != TOTAL)})
        failures[name] = int((~torch.isfinite(values[name])).sum())  # NaN and +-inf alike
    return values, failures


def finite_mean(values: torch.Tensor) -> float:
    """Mean of the finite entries of ``values`` (NaN when there is none): what a reward metric reports,
    its invalid samples being masked out of the update and counted in ``reward/<name>_failed``. Summed in
    float64, so large finite rewards (float32's 1e38) do not overflow the mean to inf."""
    finite = values[torch.isfinite(values)].double()
    return finite.mean().item() if finite.numel() else float("nan")


def combine(values: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of the named rewards ``[B]``; NaN wherever a component of nonzero weight is NaN. A
    reward of weight 0 is logged only: its failures mask no sample (``0 * NaN`` would)."""
    return sum(w * values[name] for name, w in weights.items() if w != 0)  # configs need a nonzero weight


def check_reward_kinds(
    classes: Mapping[str, Any], reward_args: Optional[Mapping[str, Mapping[str, Any]]] = None
) -> None:
    """Start-up check that each entry of ``rewards`` can be called as ``(samples, prompts, metadata)``:
    a function with that signature (its ``reward_args`` bound as keywords, as ``build_rewards`` binds them:
    an option without a default was refused although given), or a class whose instances have such a
    ``__call__``. ``ValueError`` naming ``rewards.<name>``; before, a wrong one failed on every sample and
    was masked."""
    for name, cls in classes.items():
        options = {} if inspect.isclass(cls) else dict.fromkeys((reward_args or {}).get(name, {}))
        if inspect.isclass(cls):
            call = next((c.__dict__["__call__"] for c in cls.__mro__[:-1] if "__call__" in c.__dict__), None)
            target, bound = call, (None, None, None, None)  # self, samples, prompts, metadata
            if call is None:
                raise ValueError(f"rewards.{name}: class {cls.__name__} has no __call__(samples, prompts, metadata)")
        else:
            target, bound = cls, (None, None, None)
        try:
            signature = inspect.signature(target)
            signature.bind(*bound, **options)
        except TypeError:
            empty, kinds = (
                inspect.Parameter.empty,
                (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD),
            )
            needs = [p.name for p in list(signature.parameters.values())[3:] if p.default is empty and p.kind in kinds]
            if not inspect.isclass(cls) and (missing := [n for n in needs if n not in options]):
                raise ValueError(
                    f"rewards.{name}: needs the option(s) {', '.join(missing)}, which have no default: give them in "
                    f"reward_args.{name}"
                ) from None
            raise ValueError(
                f"rewards.{name}: {getattr(target, '__qualname__', target)} cannot be called as "
                "(samples, prompts, metadata)"
            ) from None
        except ValueError:  # no signature to read (a builtin): left to the first call
            pass


SAMPLE_KINDS = ("images", "videos", "text")  # images [B, C, H, W], videos [B, F, C, H, W], text: responses


def reward_samples_problem(reward: Any, kind: str | None, maker: str) -> str:
    """Why ``reward`` cannot score what the policy makes (``kind``, one of ``SAMPLE_KINDS``; ``maker``
    names the policy's model in the message), or ``""``: a reward registered with ``samples`` (what it
    scores: ``REWARDS.register(name, samples=...)``) of another kind. ``kind`` None (not known before
    loading) and rewards registered without ``samples`` (a plain function of the user's) pass. Before,
    an image reward on videos (or the reverse) failed on every sample, was masked as NaN, and the run
    trained nothing, or stopped after its step-0 evaluation and three steps."""
    from genrl.registry import REWARDS

    scores = REWARDS.meta(reward).get("samples")
    if scores is not None and scores not in SAMPLE_KINDS:
        return f"registered with samples={scores!r}; valid: {', '.join(SAMPLE_KINDS)}"
    if kind is not None and scores is not None and scores != kind:
        return f"scores {scores}, and {maker} makes {kind}"
    return ""


def check_reward_samples(classes: Mapping[str, Any], kind: str | None, maker: str) -> None:
    """``ValueError`` naming ``rewards.<name>`` for the first reward of ``classes`` that cannot score
    what the policy makes (``reward_samples_problem``): the trainer's check once the model is loaded."""
    for name, reward in classes.items():
        if problem := reward_samples_problem(reward, kind, maker):
            raise ValueError(f"rewards.{name}: {problem}: choose a reward for {kind}")


def check_rewards_take(classes: Mapping[str, Any], shape: tuple[int, ...] | None, prompts: list[tuple]) -> None:
    """Start-up check, before anything is written, of what a reward says it needs: its optional
    ``check_samples(shape)`` against the policy's sample shape ``(C, H, W)`` / ``(F, C, H, W)`` (None:
    text, not checked) and ``check_prompts(prompts)`` against the task's training and evaluation
    ``[(prompt, metadata)]``, each raising ``ValueError`` (the digits rewards: 1x8x8 images, a digit in
    every prompt). Before, such a reward failed on every sample of every step, was masked, and the run
    trained on nothing. Declared needs rather than a trial call: a reward may raise on a sample it
    declines (it is masked), and a trial would shift a stateful reward or the global random stream.
    Raises ``ValueError`` naming ``rewards.<name>``; a check that fails otherwise (an instance method, an
    assert) is one too."""
    for name, reward in classes.items():
        for method, arg in (("check_samples", None if shape is None else tuple(shape)), ("check_prompts", prompts)):
            if arg is None or not callable(check := getattr(reward, method, None)):
                continue
            try:
                check(arg)
            except ValueError as e:  # the reward's refusal
                raise ValueError(f"rewards.{name}: {e}") from None
            except Exception as e:  # the check's own bug (an instance method, an assert): still one line
                raise ValueError(
                    f"rewards.{name}: its {method}() raised {type(e).__name__}: {e} (a check is a static or class "
                    "method, or a function attribute, that raises ValueError to refuse)"
                ) from None


def check_reward_args(
    classes: Mapping[str, Any], reward_args: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Raises ``ValueError`` naming the reward, the option and the valid ones when ``reward_args`` gives
    a reward an option its constructor (or, for a plain function, its keyword arguments after
    ``samples, prompts, metadata``) does not take, or a value its type refuses
    (:func:`typed_reward_args`). Reads signatures only, so trainers call it before
    any model is prepared or loaded: a typo costs no pretraining. Returns ``reward_args`` normalised
    (the config keeps these, so a resume compares values, not spellings: ``1e-4`` and ``0.0001``)."""
    out = {name: dict(args) for name, args in reward_args.items()}
    for name, cls in classes.items():
        args = reward_args.get(name, {})
        params = inspect.signature(cls).parameters
        if not inspect.isclass(cls):
            options = list(params)[3:]
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
            unknown = [] if takes_any else sorted(set(args) - set(options))
            if unknown:
                raise ValueError(
                    f"reward_args.{name}: unknown option(s) {unknown} for the reward function; "
                    f"valid: {', '.join(options) or 'none'}"
                )
        elif not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(args) - set(params))
            if unknown:
                raise ValueError(
                    f"reward_args.{name}: unknown option(s) {unknown}; valid: {', '.join(params) or 'none'}"
                )
        if name in out:
            out[name] = typed_reward_args(name, cls, args)
        for option in ("model", "checkpoint"):  # a task: model the task does not own, before any is built
            model = args.get(option)
            if isinstance(model, str) and model.startswith(SFT):  # it was trained first, then not loadable
                raise ValueError(
                    f"reward_args.{name}.{option}={model!r}: an sft: model is the {SFT_POLICY} policy's (an SFT "
                    "run's model); no reward loads one"
                )
            if isinstance(model, str) and model.startswith(TASK):
                try:
                    check_model_kind(model_task(model[len(TASK) :]), name)
                except ValueError as e:
                    raise ValueError(f"reward_args.{name}.{option}={model!r}: {e}") from None
    return out


def option_types(fn: Any) -> dict[str, Any]:
    """The type of each keyword option of ``fn`` (a reward function, or a class's ``__init__``): its
    annotation, resolved one by one (an annotation its module cannot resolve, e.g. one imported under
    ``TYPE_CHECKING``, is skipped, not the others), else the type of a ``bool``, ``int`` or ``float``
    default (``scale=1.0`` unannotated: YAML's ``1e-3`` is text, and arrived as text)."""
    params = inspect.signature(fn).parameters
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # one annotation cannot be resolved: the others still can
        hints = {}
        for k, annotation in getattr(fn, "__annotations__", {}).items():
            try:
                one = types.SimpleNamespace(__annotations__={k: annotation})
                hints[k] = typing.get_type_hints(one, globalns=getattr(fn, "__globals__", {}))[k]
            except Exception:  # this one cannot be resolved: not checked
                pass
    for k, p in params.items():
        if k not in hints and type(p.default) in (bool, int, float):
            hints[k] = type(p.default)
    return hints


def typed_reward_args(name: str, cls: Any, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` of reward ``name`` checked against the types of its constructor's (a class) or keyword
    arguments' (a plain function) options (:func:`option_types`), by the config fields' rules
    (``genrl.config.coerce_option``): ``quality=high`` for an ``int`` option was passed through and failed
    inside the reward, at the first step or never; now it is ``ValueError``
    ``reward_args.<name>.<option>=...: expected int, got str``. Returns the values normalised (``1e-4``,
    which YAML reads as text, as a float for a ``float`` option). Options without a type are passed as
    they are."""
    from genrl.config import coerce_option  # here: genrl.config imports the rewards, which import this module

    hints = option_types(cls.__init__ if inspect.isclass(cls) else cls)
    return {k: coerce_option(v, hints[k], f"reward_args.{name}.{k}") if k in hints else v for k, v in args.items()}


def build_rewards(classes: Mapping[str, Any], reward_args: Mapping[str, Mapping[str, Any]]) -> dict:
    """``{name: cls(**reward_args[name])}`` for reward classes; a plain function (a reward named by
    its import path, ``my_pkg.rewards:brightness``) is the reward itself, its options bound as
    keyword arguments. Options are checked first (``check_reward_args``). A class that refuses its
    options (``ValueError``, ``TypeError``, or ``RuntimeError`` such as ``device=cuda`` without a GPU) is
    one ``ValueError`` naming ``reward_args.<name>`` (``rewards.<name>`` without options)."""
    reward_args = check_reward_args(classes, reward_args)
    out = {}
    for name, cls in classes.items():
        args = reward_args.get(name, {})
        if inspect.isclass(cls):
            try:
                out[name] = cls(**args)
            except (ValueError, TypeError, RuntimeError) as e:
                key = f"reward_args.{name}" if args else f"rewards.{name}"
                kind = "" if isinstance(e, ValueError) else f"{type(e).__name__}: "
                raise ValueError(f"{key}: {kind}{str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from e
        else:
            out[name] = functools.partial(cls, **args) if args else cls
    return out


class ChunkScorer:
    """Scores rollout chunks as they are produced. Asynchronous: in one worker thread, so a
    chunk's rewards are computed while the policy generates the next chunk; synchronous: in
    line. Either way each chunk is scored on its own, so both give the same values."""

    def __init__(self, rewards: dict, asynchronous: bool):
        self.rewards = rewards
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrl-reward") if asynchronous else None
        self._pending: list[Future | tuple] = []  # futures, or (samples, prompts, metadata) to score in line

    def _score(self, samples, prompts, metadata):
        t0 = time.perf_counter()
        values, failures = score_samples(self.rewards, samples, prompts, metadata)
        return values, failures, time.perf_counter() - t0

    def submit(self, samples, prompts: list[str], metadata: list[dict]) -> None:
        """Start scoring a chunk (asynchronous), or queue it for :meth:`collect` (synchronous)."""
        if self.pool is None:
            self._pending.append((samples, prompts, metadata))
        else:
            self._pending.append(self.pool.submit(self._score, samples, prompts, metadata))

    def collect(self) -> tuple[dict[str, torch.Tensor], dict[str, int], float]:
        """All submitted chunks in order: (values key -> [B], failures, seconds spent scoring)."""
        parts = [p.result() if isinstance(p, Future) else self._score(*p) for p in self._pending]
        self._pending = []
        # a key one chunk lacks (its reward failed there) is NaN for that chunk's samples, not dropped
        keys = dict.fromkeys(k for p in parts for k in p[0])
        sizes = [len(next(iter(p[0].values()))) for p in parts]
        values = {
            k: torch.cat([p[0].get(k, torch.full((n,), float("nan"))) for p, n in zip(parts, sizes)]) for k in keys
        }
        failures = {k: sum(p[1][k] for p in parts) for k in parts[0][1]}  # every part counts every reward
        return values, failures, sum(p[2] for p in parts)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
