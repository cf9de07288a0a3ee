"""A tiny name -> constructor registry, one per model kind (detectors, embedders).

Each model family lives in one file and registers its small named constructors with
:meth:`Registry.register`; configuration picks a model by name and an unknown name fails
with the list of known ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from facerec.errors import UnknownModelError
from facerec.weights import WeightsSpec

T = TypeVar("T")


@dataclass(frozen=True)
class ModelEntry(Generic[T]):
    """What the registry knows about one named model.

    Attributes:
        name: registry key, e.g. ``"yolov5n-0.5-face"``.
        build: constructor; called with keyword arguments by the ``create_*`` factories.
        weights: where the weights come from and how to feed the model.
        info: free-form facts shown by ``facerec weights`` (architecture, claimed accuracy).
    """

    name: str
    build: Callable[..., T]
    weights: WeightsSpec
    info: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Maps model names to :class:`ModelEntry`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, ModelEntry[T]] = {}

    def register(self, name: str, weights: WeightsSpec, **info: Any) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register ``fn`` as the constructor of model ``name``."""

        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = ModelEntry(name, fn, weights, dict(info))
            return fn

        return deco

    def get(self, name: str) -> ModelEntry[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownModelError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[ModelEntry[T]]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries
