"""Name -> implementation registries filled by a decorator (one per variant family)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named implementations; unknown names raise a ConfigError listing the valid ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name` (names are unique)."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, field: str | None = None) -> T:
        """The implementation named `name`, or a ConfigError naming `field` and the valid names."""
        try:
            return self._items[name]
        except KeyError:
            where = f"{field} = {name!r}" if field else f"{self.kind} {name!r}"
            raise ConfigError(f"{where}: unknown {self.kind}; valid choices: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def name_of(self, obj: object) -> str:
        """The name `obj` (or the nearest registered class it derives from) is registered under."""
        for cls in getattr(obj, "__mro__", (obj,)):
            for n, o in self._items.items():
                if o is cls:
                    return n
        return getattr(obj, "__name__", str(obj))

    def unregister(self, name: str) -> None:
        """Remove `name` (tests that register a variant of their own clean up with this)."""
        self._items.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]


def import_submodules(package: str, path: Iterable[str]) -> list[str]:
    """Import every module of a package folder, in name order (their decorators fill the registries)."""
    names = sorted(m.name for m in pkgutil.iter_modules(list(path)))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
