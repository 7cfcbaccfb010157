"""Name -> object registries for model families, objectives, policies, rewards and tasks.

Every registry knows the full list of valid names, so a typo is an error that lists the
alternatives instead of an ``AttributeError`` deep in a training run. Concrete rewards
live outside ``genrl`` (in the ``rewards`` package); they are found by importing the
providing modules lazily, the first time that kind of registry is queried, so ``genrl``
never imports a concrete reward at top level.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

# Modules that register entries of a kind when imported. Imported lazily on first lookup.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "family": ("genrl.families",),
    "objective": ("genrl.objectives",),
    "policy": ("genrl.policies",),
    "reward": ("rewards",),
    "task": ("genrl.tasks",),
}


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in _PROVIDERS.get(self.kind, ()):
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> Any:
        self._load()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries


FAMILIES = Registry("family")
OBJECTIVES = Registry("objective")
POLICIES = Registry("policy")
REWARDS = Registry("reward")
TASKS = Registry("task")
