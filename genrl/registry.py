"""Name -> object registries for model families, objectives, advantage estimators, policies, rewards
and tasks.

Every registry knows the full list of valid names, so a typo is an error that lists the
alternatives instead of an ``AttributeError`` deep in a training run. Concrete rewards
live outside ``genrl`` (in the ``rewards`` package); they are found by importing the
providing packages lazily, the first time that kind of registry is queried, so ``genrl``
never imports a concrete reward at top level. A providing package imports each of its
modules (``import_submodules``), so a new file registers itself: no hand-kept import list.

Extension from outside the repository: wherever a registered name is expected (``task``,
``policy.name``, ``objective.name``, the keys of ``rewards``), an import path
``package.module:attribute`` names an object of the user's own package instead, e.g.
``objective.name=my_pkg.losses:my_objective``. ``register(name, **meta)`` attaches metadata
(an objective's ``chunk_agg``), read back with ``meta(name_or_object)``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable

# Modules that register entries of a kind when imported. Imported lazily on first lookup.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "advantage estimator": ("genrl.advantages",),
    "family": ("genrl.families",),
    "objective": ("genrl.objectives",),
    "policy": ("genrl.policies",),
    "reward": ("rewards",),
    "task": ("genrl.tasks",),
}


def import_submodules(package: str, skip: tuple[str, ...] = ()) -> None:
    """Import every module of ``package`` (its registrations run), except the names in ``skip``."""
    pkg = importlib.import_module(package)
    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name not in skip and not m.name.startswith("_"):
            importlib.import_module(f"{package}.{m.name}")


def is_import_path(name: str) -> bool:
    """``package.module:attribute`` (a colon, a module and an attribute)."""
    module, sep, attr = name.partition(":")
    return bool(sep and module and attr)


def plugin_call(fn: Callable, *args, option: str, name: str, name_refusals: bool = True) -> Any:
    """``fn(*args)``: a call of the registry entry ``name`` that setting ``option`` selects (an objective, an
    advantage estimator, a task's ``from_config``). A ``ValueError`` it raises, its own refusal of its input,
    is raised again with ``option=name`` in front, so the one-line error names the setting (a plug-in's "my
    objective refuses" named nothing); with ``name_refusals=False`` only a plug-in's are (genrl's own tasks
    name the file or key already). Any other error of a plug-in (``name`` an import path: a wrong signature, a ``KeyError``)
    is a fault of the plug-in: a ``ValueError`` naming it and the error (``GENRL_TRACEBACK=1`` shows where),
    so a run that stops at its first use leaves nothing behind. Running out of memory and ``RunFailed``
    stay what they are, and so does any error of genrl's own entries (a traceback: a bug to report)."""
    try:
        return fn(*args)
    except ValueError as e:
        if str(e).startswith(f"{option}=") or not (name_refusals or is_import_path(name)):
            raise
        raise ValueError(f"{option}={name!r}: {e}") from e
    except Exception as e:
        from genrl.preemption import RunFailed

        if (
            not is_import_path(name)
            or isinstance(e, (MemoryError, RunFailed))
            or type(e).__name__ == "OutOfMemoryError"
        ):
            raise
        raise ValueError(f"{option}={name!r} raised {type(e).__name__}: {e}") from e


def checked_metrics(
    metrics: Any, where: str, what: str = "metrics", reserved: tuple[str, ...] = ()
) -> dict[str, float]:
    """A plug-in's metrics (an objective's, an estimator's stats, a task's evaluation) against their
    contract: a dict of names (not ``step``, the row's own, nor one of ``reserved``: names, or prefixes
    ending in ``/``, that the trainer logs itself) to real numbers (a one-element tensor is read as its
    number). Returns them as floats; a ``ValueError`` starting with ``where`` (the setting) otherwise, where a
    text value was written into the logs and failed at the end of the run, or was dropped silently, and an
    objective's ``reward/total_mean`` replaced the trainer's."""
    import numbers

    if not isinstance(metrics, dict):
        raise ValueError(f"{where}: the {what} must be a dict of name -> number, got a {type(metrics).__name__}")
    out = {}
    for key, v in metrics.items():
        if not isinstance(key, str) or key == "step":
            raise ValueError(f"{where}: metric name {key!r} is not a name it may log ('step' is the row's own)")
        if any(key == r or (r.endswith("/") and key.startswith(r)) for r in reserved):
            raise ValueError(
                f"{where}: metric name {key!r} is the trainer's own ({', '.join(reserved)} are): choose another name"
            )
        if hasattr(v, "numel") and v.numel() == 1:  # a one-element tensor
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"{where}: metric {key!r} is a {type(v).__name__}; metrics are numbers")
        out[key] = float(v)
    return out


def import_object(path: str, kind: str = "object") -> Any:
    """The object at ``package.module:attribute`` (dots in the attribute walk into it). A module
    or attribute that cannot be found is a ``ValueError`` naming the path."""
    module, _, attr = path.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{kind} {path!r}: cannot import module {module!r} ({e})") from None
    except Exception as e:  # the plug-in's own code raised while importing: name it, in one line
        raise ValueError(f"{kind} {path!r}: importing module {module!r} raised {type(e).__name__}: {e}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{kind} {path!r}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _is_class(obj: Any) -> bool:
    return isinstance(obj, type)


class Registry:
    """``kind``: what its entries are, in messages. ``is_entry`` / ``expected``: the test an object named by
    import path must pass, and its words for a refusal (a policy must be a class): a plug-in of the wrong
    kind (``my_pkg.x:CONSTANT``) is refused at config load naming the key, not a ``TypeError`` of
    ``issubclass`` or ``inspect.signature`` deep in it."""

    def __init__(self, kind: str, is_entry: Callable[[Any], bool] = callable, expected: str = "a function or class"):
        self.kind = kind
        self.is_entry, self.expected = is_entry, expected
        self._entries: dict[str, Any] = {}
        self._meta: dict[int, dict[str, Any]] = {}  # id(object) -> metadata given to register
        self._loaded = False

    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        """Decorator registering ``obj`` under ``name`` with metadata ``meta`` (documented per kind:
        objectives take ``chunk_agg``, the aggregation they force for chunk weights (or a function of the
        ``ObjectiveConfig`` giving it), ``check_config``, ``kind`` and ``state``, a factory
        ``state(cfg, policy, optimizer)`` of what the objective keeps across updates (see
        ``genrl.trainers.online.update``); objectives and advantage estimators take ``options``, the names
        of their config section's fields that only they read (any other selected entry refuses them set:
        ``genrl.config.base.owned_options``), and ``reads_options_of(section)``, other entries whose
        options they read too, and ``ignores``, fields that the other entries read and they do not
        (sapo's gate replaces ``clip_range``), refused when set (``owned_options`` too); policies take
        ``check_config(policy_cfg)``, their rules checked before any model loads (flow: its family's
        options); tasks take ``required``, the dotted config keys that must be non-empty for them; rewards
        take ``samples``, what they score (``genrl.scoring.SAMPLE_KINDS``: images, videos or text), checked
        against what the policy makes at start-up)."""

        def deco(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                held = self._entries[name]
                where = f"{getattr(held, '__module__', '?')}.{getattr(held, '__qualname__', held)}"
                raise ValueError(
                    f"{self.kind} {name!r} is registered twice: {getattr(obj, '__module__', '?')}."
                    f"{getattr(obj, '__qualname__', obj)} takes the name of {where}; give it another name (or name it "
                    "by its import path, package.module:attribute, without registering)"
                )
            self._entries[name] = obj
            self._meta[id(obj)] = dict(meta)
            return obj

        return deco

    def meta(self, name_or_obj: Any) -> dict[str, Any]:
        """The metadata registered with an entry (by name, import path or the object itself); ``{}``
        for an object registered without any, or not registered at all."""
        obj = self.get(name_or_obj) if isinstance(name_or_obj, str) else name_or_obj
        return dict(self._meta.get(id(obj), {}))

    def in_use(self, name: str, section: Any) -> list[str]:
        """``name`` and the entries whose options it reads too (its ``reads_options_of(section)`` meta,
        e.g. capo's base objective), given the config ``section`` that selects it."""
        return [name, *self.meta(name).get("reads_options_of", lambda s: ())(section)]

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in _PROVIDERS.get(self.kind, ()):
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        """The entry ``name``, or the object at an import path ``package.module:attribute`` (``ValueError``
        when it is not of this registry's kind, ``is_entry``)."""
        if is_import_path(name):
            obj = import_object(name, self.kind)
            if not self.is_entry(obj):
                shown = type(obj).__name__  # a class passes every registry's test
                article = "an" if shown[:1] in "aeiou" else "a"
                raise ValueError(f"{self.kind} {name!r} is {article} {shown}, not {self.expected}")
            return obj
        self._load()
        if name not in self._entries:
            module, dot, attr = name.rpartition(".")  # my_pkg.losses.fn: a plug-in written without its colon
            hint = (
                f"; a plug-in is named package.module:attribute ({module}:{attr}?)" if dot and module and attr else ""
            )
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}{hint}")
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries or is_import_path(name)


ADVANTAGE_ESTIMATORS = Registry("advantage estimator")
FAMILIES = Registry("family", _is_class, "a class (a subclass of genrl.families.base.Family)")
OBJECTIVES = Registry("objective", callable, "a function")
POLICIES = Registry(
    "policy", _is_class, "a class (a subclass of genrl.policies.denoiser.DenoisingPolicy or VLMPolicy)"
)
REWARDS = Registry("reward")
TASKS = Registry("task", _is_class, "a class (genrl.protocols.Task)")
