"""A cached property without a lock, as ``functools.cached_property`` is from Python 3.12.

Up to Python 3.11, ``functools.cached_property`` holds one lock per property of a class,
shared by all its instances. A solid's measures are built lazily from other solids' (a
union's slabs from its inputs' slabs, their bulk from theirs), so two threads checking two
courses at once (the audit's Dask workers) can each hold the lock of one property while
waiting for the other's, and both wait forever. Without the lock, two threads that ask
for the same value at once both compute it, and the same value is kept: every value cached
here is a pure function of the instance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

_T = TypeVar("_T")


class lazy(Generic[_T]):
    """Compute an attribute on first access and keep it in the instance's ``__dict__``."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> lazy[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> lazy[_T] | _T:
        if instance is None:
            return self
        value = self.func(instance)
        instance.__dict__[self.name] = value  # later reads find it there, not here
        return value
