"""How StateDB serves each method from the table module that does it without writing the
method's parameters again: the table's method is the one place they are declared, and a type
checker sees the facade's method with exactly those parameters."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, cast, overload

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


class Part(Generic[T]):
    """One aggregate the facade holds: set once in its __init__, read as the aggregate itself."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = name  # in the instance's __dict__, under its own name (a data descriptor wins)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> Self | T:
        if obj is None:
            return self
        return cast(T, obj.__dict__[self.slot])

    def __set__(self, obj: object, value: T) -> None:
        obj.__dict__[self.slot] = value

    def serves(self, method: Callable[Concatenate[T, P], R]) -> Served[T, P, R]:
        return Served(self, method)


class Served(Generic[T, P, R]):
    """A facade method done by its part's method. Read off an instance it is that method bound
    to the instance's part; read off the class it is called with the instance first, as a
    function is, so it can be wrapped or replaced like one."""

    def __init__(self, part: Part[T], method: Callable[Concatenate[T, P], R]) -> None:
        self.part = part
        self.method = method
        functools.update_wrapper(self, method)

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> Callable[P, R]: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> Self | Callable[P, R]:
        if obj is None:
            return self
        part = self.part.__get__(obj)
        method = self.method

        def bound(*args: P.args, **kwargs: P.kwargs) -> R:
            return method(part, *args, **kwargs)

        return bound

    def __call__(self, obj: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.method(self.part.__get__(obj), *args, **kwargs)
