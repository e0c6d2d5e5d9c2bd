"""Recurrence kinds: one file each, one registry line each; and the recurrent layers of a model, found through them.

A new kind is a module defining `KIND = Kind(...)` (see common.py: kernel names and their dispatcher factories,
the modeling modules that call them, how to read a mixer's state shape) plus its line in KINDS below;
s0.adapters.injection and `recurrent_layers` consult KINDS and need no change.

    from s0.adapters.kinds import recurrent_layers
    [(r.index, r.kind, r.state_shape) for r in recurrent_layers(model)]
    # [(0, 'gdn', (4, 16, 8)), (1, 'gdn', (4, 16, 8)), (2, 'gdn', (4, 16, 8))]

`recurrent_layers` lives here, beside `detect`, and not in s0.models: s0.adapters imports s0.models, so s0.models
imports nothing of s0.adapters (no import circle; tests/test_layout.py walks the graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from s0.adapters.kinds import gdn, kda, mamba1, mamba2, rglru
from s0.adapters.kinds.common import Kind
from s0.models import TINY_ARCH, ModelError, build_model, count_parameters

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


@dataclass(frozen=True)
class RecurrentLayer:
    """One recurrent mixer of a hybrid model and the shape of its per-sequence state."""

    index: int  # decoder layer index (the cache's layer_idx)
    kind: str  # a key of KINDS: "gdn", "mamba2", ...
    module: nn.Module
    # GDN: (value heads, key dim, value dim); Mamba-2: (heads, head dim, d_state). Batch dim excluded.
    state_shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.state_shape)


def recurrent_layers(model: nn.Module) -> list[RecurrentLayer]:
    """Every recurrent mixer of `model` of a registered kind (KINDS), in layer order.

    Found by structure, not by model name, so Qwen3-Next style GDN layers and other Mamba-2 hybrids work too.
    """
    found = []
    for module in model.modules():
        hit = detect(module)
        if hit is not None:
            found.append(RecurrentLayer(module.layer_idx, hit[0], module, hit[1]))
    return sorted(found, key=lambda r: r.index)


def require_recurrent_layers(model: nn.Module, model_name: str = "this model") -> list[RecurrentLayer]:
    """`recurrent_layers`, raising a clear error (s0.models.ModelError) for a pure Transformer."""
    layers = recurrent_layers(model)
    if not layers:
        raise ModelError(
            f"{model_name} has no recurrent (GatedDeltaNet or Mamba-2) layers, so S0 and state-offset do not "
            "apply; use method=prefix or method=lora for a pure Transformer (paper Sec 5.8)."
        )
    return layers


@dataclass(frozen=True)
class StateCount:
    """What S0 learns in one architecture: its recurrent kinds, layers and state sizes (no weights needed)."""

    kinds: tuple[str, ...]  # the recurrence kinds present, in layer order of first appearance
    n_layers: int  # recurrent layers (each gets one S0)
    shapes: tuple[tuple[int, ...], ...]  # the distinct per-layer state shapes
    per_layer: tuple[int, ...]  # the distinct per-layer state entries
    total: int  # S0 parameters in all: the sum over recurrent layers
    model_params: int  # every parameter of the model, for the share


def state_count(family: str, arch: dict[str, Any] | None) -> StateCount:
    """S0's size for `family` with `arch` (None: the tiny one), read off the model built on the meta device."""
    model = build_model(family, arch or TINY_ARCH[family], weights="meta")
    layers = recurrent_layers(model)
    return StateCount(
        kinds=tuple(dict.fromkeys(r.kind for r in layers)),
        n_layers=len(layers),
        shapes=tuple(dict.fromkeys(r.state_shape for r in layers)),
        per_layer=tuple(dict.fromkeys(r.numel for r in layers)),
        total=sum(r.numel for r in layers),
        model_params=count_parameters(model),
    )


__all__ = [
    "KINDS",
    "Kind",
    "RecurrentLayer",
    "StateCount",
    "detect",
    "recurrent_layers",
    "require_recurrent_layers",
    "state_count",
]
