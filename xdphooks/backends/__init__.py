"""Backends turn a planned :class:`~xdphooks.model.Chain` into one loaded XDP
program ready to attach. Each is a module with a ``build(ctx) -> BuiltChain``
function; the coordinator does the attaching, pinning and state.

- ``static``   — rootlet + rewritten components linked into one program.
- ``freplace`` — dispatcher whose slots are replaced by the components.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("static", "freplace")


def get(name: str) -> ModuleType:
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}")
    return importlib.import_module(f"{__name__}.{name}")
