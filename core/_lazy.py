"""Package attributes loaded on first use (PEP 562), for packages a worker imports for one
small part: the worker's start-up should not pay for the gRPC server machinery."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, sources: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``sources[name]`` on first use.

    ``sources`` maps each lazily exported name to the submodule that defines it.
    """

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(source), name)

    return __getattr__
