"""Name -> merge method. The first lookup imports every method module of the folder once and adds each
function's `<space>_<name>` aliases (`aliases`): a method is found by its module alone."""

from __future__ import annotations

import importlib
import pkgutil

from loramerge.merging.aliases import missing_aliases
from loramerge.merging.base import MergeMethod

_METHODS: dict[str, type[MergeMethod]] = {}
_SKIP = {"base", "registry", "aliases"}


def register(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Class decorator: make a method available under `cls.name`."""
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise ValueError(f"merge method {cls.name!r} is registered twice")
    _METHODS[cls.name] = cls
    return cls


def _load_all() -> None:
    import loramerge.merging as package  # the package imports this module: a top-level import would be a cycle

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _SKIP and not info.name.startswith("_"):
            importlib.import_module(f"loramerge.merging.{info.name}")
    for alias in missing_aliases(_METHODS):
        register(alias)


def available_methods() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def get_method(name: str) -> MergeMethod:
    """The method registered as `name`, or a ValueError listing the known ones."""
    _load_all()
    if name not in _METHODS:
        raise ValueError(f"unknown merge method {name!r}; known methods: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]()
