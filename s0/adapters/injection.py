"""Where a learned state enters the recurrence: thin dispatchers around transformers' kernel functions.

transformers' mixers call module-level kernel functions, resolved from the module's globals at call time. Each
recurrence kind (s0/adapters/kinds/: gdn.py, mamba2.py, ...) names its kernels and supplies a dispatcher
factory for each; `install` replaces those names, once, with the dispatchers. Per-mixer forward hooks (added by
`attach` while an adapter is active) put a `Call` in a context variable: the layer's `LayerInjection` and its
2D pad mask. A dispatcher with no `Call` runs the original kernel with the original arguments, so a model with
no active adapter computes exactly what it computed before. With a `Call` it

  * injects the initial state only when the kernel starts a fresh sequence (no cache, or the first prefill into
    an empty cache). Later segments and decode steps read the cache, never S0 again;
  * makes padded steps the identity. Left pads have zero inputs but a nonzero decay, so without this a nonzero
    initial state reaches the first real token shrunk by a pad-length dependent factor (each kind file says
    how it zeroes the decay and the write at pads);
  * adds a readout offset at every step for state-offset (output uses S_t + dS);
  * makes fused training paths that take no initial state decline, so the mixer takes the path that does.

Backend routing (s0.backends) also goes through these dispatchers: `set_route("gdn", "torch_when_grad")` sends
calls that need a backward to transformers' PyTorch kernel (the decorated function's `__wrapped__`).
"""

from __future__ import annotations

import inspect
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from torch import nn

from s0.adapters.kinds import KINDS, RecurrentLayer, gdn, mamba2
from s0.adapters.kinds.common import (
    CURRENT,
    OVERRIDE,
    PACKAGE_PRESENT,
    ROUTE,
    Call,
    LayerInjection,
)

GDN_KERNELS = gdn.KIND.kernels
MAMBA_KERNELS = mamba2.KIND.kernels
KNOWN_MODULES = tuple(m for kind in KINDS.values() for m in kind.modules)

# The names tests and tools have always reached through this module; the objects live in kinds/.
_CURRENT, _Call, _PACKAGE_PRESENT = CURRENT, Call, PACKAGE_PRESENT
_gdn_dispatch, _mamba_fused_dispatch = gdn.dispatch, mamba2.fused_dispatch


class InjectionError(RuntimeError):
    """The model's mixers do not call kernels this module knows how to route a state into."""


def set_route(family: str, route: str) -> None:
    if family not in ROUTE or route not in ("native", "torch", "torch_when_grad"):
        raise ValueError(f"bad route {family}={route}")
    ROUTE[family] = route


def get_routes() -> dict[str, str]:
    return dict(ROUTE)


class override_kernel:
    """`with override_kernel("torch_chunk_gated_delta_rule", fn): ...` routes that kernel name to `fn`."""

    def __init__(self, name: str, fn: Callable[..., Any]):
        self.name, self.fn = name, fn

    def __enter__(self):
        self.prev = OVERRIDE.get(self.name)
        OVERRIDE[self.name] = self.fn
        return self

    def __exit__(self, *exc):
        if self.prev is None:
            OVERRIDE.pop(self.name, None)
        else:
            OVERRIDE[self.name] = self.prev


def install(module: ModuleType, kind: str) -> None:
    """Replace the kernel names of `kind` (a key of KINDS) in a modeling module; idempotent."""
    if kind not in KINDS:
        raise InjectionError(f"unknown recurrence kind '{kind}'; known: {', '.join(KINDS)}")
    names = KINDS[kind].kernels
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        raise InjectionError(
            f"{module.__name__} has no {', '.join(missing)}: this transformers version wires the recurrence "
            "differently, so the state cannot be injected (S0 needs transformers >= 5.23)."
        )
    for n in names:
        current = getattr(module, n)
        if not hasattr(current, "_s0_original"):
            setattr(module, n, KINDS[kind].dispatchers[n](n, current))


def uninstall(module: ModuleType) -> None:
    """Put the original kernels back (tests; normal use leaves the pass-through dispatchers in place)."""
    for kind in KINDS.values():
        for n in kind.kernels:
            current = getattr(module, n, None)
            if current is not None and hasattr(current, "_s0_original"):
                setattr(module, n, current._s0_original)


def install_known() -> list[str]:
    """Install into every known modeling module that imports; returns their names (backends call this)."""
    done = []
    for kind in KINDS.values():
        for mod_name in kind.modules:
            try:
                module = __import__(mod_name, fromlist=["_"])
            except ImportError:
                continue
            install(module, kind.name)
            done.append(mod_name)
    return done


def kernel_notes(kinds: list[str]) -> dict[str, str]:
    """How the state reaches each kind's kernel, for provenance (e.g. Mamba-1's scan takes no initial state)."""
    return {k: KINDS[k].kernel_note for k in dict.fromkeys(kinds)}


def original(module: ModuleType, name: str) -> Callable:
    """The kernel transformers resolved (fla / mamba-ssm / PyTorch), under any dispatcher."""
    fn = getattr(module, name)
    return getattr(fn, "_s0_original", fn)


def pytorch_kernel(module: ModuleType, name: str) -> Callable:
    """transformers' own PyTorch implementation of a kernel name, whatever package it resolved to."""
    fn = original(module, name)
    return getattr(fn, "__wrapped__", fn)


# ---------------------------------------------------------------- hooks
# mixer -> the injection attached to it now (while its adapter is active): what per_step_layers reads.
ATTACHED: weakref.WeakKeyDictionary[nn.Module, LayerInjection] = weakref.WeakKeyDictionary()


def per_step_layers(model: nn.Module) -> list[str]:
    """Names of `model`'s mixers whose attached injection acts at every cached decode step (a readout offset:
    state-offset). S0 alone acts only when a sequence starts, so its hooks skip decode steps; s0.decode compiles a
    decode step only when this list is empty, because a compiled dispatcher cannot read the call (current_call)."""
    return [
        name for name, m in model.named_modules() if m in ATTACHED and ATTACHED[m].readout_offset is not None
    ]


class Attachment:
    """Forward hooks on the selected mixers; `remove()` leaves the model exactly as it was."""

    def __init__(self, layers: list[RecurrentLayer], injections: dict[int, LayerInjection]):
        self.handles: list[Any] = []
        self.modules: list[nn.Module] = []
        for layer in layers:
            if layer.index not in injections:
                continue
            install(sys.modules[type(layer.module).__module__], layer.kind)
            inj = injections[layer.index]
            tokens: list[Any] = []  # stack: a mixer can be re-entered by gradient-checkpoint recomputation
            hook = _pre_hook(inj, tokens, _mixer_args(layer.module))
            self.handles.append(layer.module.register_forward_pre_hook(hook, with_kwargs=True))
            self.handles.append(layer.module.register_forward_hook(_post_hook(tokens), always_call=True))
            ATTACHED[layer.module] = inj
            self.modules.append(layer.module)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for m in self.modules:
            ATTACHED.pop(m, None)
        self.modules.clear()


# The mixer argument that carries the cache: `cache` from transformers 5.24, `cache_params` before.
CACHE_ARG_NAMES = ("cache", "cache_params")


@dataclass(frozen=True)
class _MixerArgs:
    """Where a mixer's forward takes the three arguments the pre-hook reads: (name, position) each."""

    hidden: tuple[str, int]
    cache: tuple[str, int]
    mask: tuple[str, int]

    def read(self, args: tuple, kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
        return tuple(
            kwargs[name] if name in kwargs else (args[pos] if pos < len(args) else None)
            for name, pos in (self.hidden, self.cache, self.mask)
        )


def _mixer_args(module: nn.Module) -> _MixerArgs:
    """Read the names from the forward's signature: a renamed argument would otherwise be read as None, and the
    decode-step skip would silently stop firing (it did when 5.24 renamed cache_params to cache)."""
    params = list(inspect.signature(module.forward).parameters)  # bound method: no `self`
    cache = [n for n in params if n in CACHE_ARG_NAMES]
    if "hidden_states" not in params or "attention_mask" not in params or len(cache) != 1:
        raise InjectionError(
            f"{type(module).__name__}.forward{tuple(params)} does not take hidden_states, one of "
            f"{CACHE_ARG_NAMES} and attention_mask: this transformers version is not supported"
        )
    hidden, cache_name, mask = "hidden_states", cache[0], "attention_mask"
    return _MixerArgs(
        (hidden, params.index(hidden)), (cache_name, params.index(cache_name)), (mask, params.index(mask))
    )


def _pre_hook(inj: LayerInjection, tokens: list[Any], names: _MixerArgs) -> Callable:
    def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        hidden, cache, mask = names.read(args, kwargs)
        # An S0-only layer has nothing to do on a cached one-token decode step: skip, so that step runs the
        # base model's code and nothing else (the zero-overhead property, tested op by op).
        if (
            inj.readout_offset is None
            and hidden is not None
            and hidden.shape[1] == 1
            and cache is not None
            and cache.has_previous_state(module.layer_idx)
        ):
            tokens.append(None)
            return None
        if mask is not None and mask.dim() != 2:
            mask = None  # a 4D custom mask carries no 2D padding signal; transformers ignores it here too
        fresh = cache is None or not cache.has_previous_state(module.layer_idx)
        tokens.append(CURRENT.set(Call(inj, mask, fresh)))
        return None

    return hook


def _post_hook(tokens: list[Any]) -> Callable:
    def hook(module: nn.Module, args: tuple, output: Any):
        token = tokens.pop() if tokens else None
        if token is not None:
            CURRENT.reset(token)
        return None

    return hook


def attach(layers: list[RecurrentLayer], injections: dict[int, LayerInjection]) -> Attachment:
    return Attachment(layers, injections)
