"""Recurrence kinds: one file each, one registry line each.

A new kind is a module defining `KIND = Kind(...)` (see common.py: kernel names and their dispatcher factories,
the modeling modules that call them, how to read a mixer's state shape) plus its line in KINDS below;
s0.adapters.injection and s0.models consult KINDS and need no change.
"""

from __future__ import annotations

from torch import nn

from s0.adapters.kinds import gdn, kda, mamba1, mamba2, rglru
from s0.adapters.kinds.common import Kind

KINDS: dict[str, Kind] = {
    "gdn": gdn.KIND,
    "mamba2": mamba2.KIND,
    "mamba1": mamba1.KIND,
    "rglru": rglru.KIND,
    "kda": kda.KIND,
}


def detect(module: nn.Module) -> tuple[str, tuple[int, ...]] | None:
    """(kind name, state shape) if `module` is a recurrent mixer of a registered kind, else None.

    The first kind that recognises the module wins, in KINDS order."""
    for kind in KINDS.values():
        shape = kind.state_shape(module)
        if shape is not None:
            return kind.name, shape
    return None


__all__ = ["KINDS", "Kind", "detect"]
