"""Values a worker process builds once and keeps across units: a loaded model.

A unit that needs a model takes a `Resident` (a key naming the model, e.g. its
weights' digest, and a function that builds it) instead of the model itself: on a
Ray worker the model is loaded by the first unit that needs it and reused by every
later unit in that process, so a long-lived worker holds the model rather than
reloading it per unit; in the driver (the local executor) it is built once too.
A process keeps one resident at a time (units are ordered model by model): a
resident of another key replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# This process's resident value by key (at most one).
_RESIDENTS: dict[str, Any] = {}


@dataclass(frozen=True)
class Resident(Generic[T]):
    """`build()`'s value, built at most once per process and named by `key` (two
    residents of one key are the same value)."""

    key: str
    build: Callable[[], T]

    def get(self) -> T:
        """The value, built on first use in this process (one shipped with the unit is
        used as it is)."""
        if isinstance(self.build, _Value):
            return self.build.value
        if self.key not in _RESIDENTS:
            # One resident at a time: another model replaces the last, as memory allows.
            _RESIDENTS.clear()
            _RESIDENTS[self.key] = self.build()
        value: T = _RESIDENTS[self.key]
        return value

    def stored(self, put: Callable[[T], Any]) -> Resident[T]:
        """This resident as workers fetch it once each from an object store (`put`
        stores its value, e.g. `ray.put`), if it carries its value; else itself."""
        if isinstance(self.build, _Value):
            return Resident(self.key, _Stored(put(self.build.value)))
        return self

    @classmethod
    def of(cls, key: str, value: T) -> Resident[T]:
        """A value already built (in the driver): used as it is in this process, and put
        once into Ray's object store for a Ray executor's workers (`stored`)."""
        return cls(key, _Value(value))


@dataclass(frozen=True)
class _Value(Generic[T]):
    """A built value as a picklable function returning it."""

    value: T

    def __call__(self) -> T:
        return self.value


@dataclass(frozen=True)
class _Stored(Generic[T]):
    """A value in Ray's object store, fetched by the first unit of a worker that needs it."""

    reference: Any

    def __call__(self) -> T:
        import ray

        value: T = ray.get(self.reference)
        return value
