"""Package attributes imported on first use (PEP 562), so that importing a package does not
import torch until a name that needs it is asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any


def lazy_getattr(
    namespace: MutableMapping[str, Any], names: Mapping[str, str]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` that loads ``names[name]`` from its module on first use and
    keeps it in ``namespace`` (the module's ``globals()``), so the next lookup is direct.

    Example:
        >>> ns = {"__name__": "pkg"}
        >>> getattr_ = lazy_getattr(ns, {"OrderedDict": "collections"})
        >>> getattr_("OrderedDict").__name__, "OrderedDict" in ns
        ('OrderedDict', True)
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
