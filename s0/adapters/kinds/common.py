"""What every recurrence kind shares: the active call, kernel routing, and the `Kind` record a kind file fills.

A kind file (gdn.py, mamba2.py, mamba1.py) says which kernel names of a transformers modeling module it wraps
and how (one dispatcher factory per name), which modeling modules use them, and how to recognise its mixer and
read the state shape. s0/adapters/injection.py installs the dispatchers and sets `CURRENT` from forward hooks;
a dispatcher reads `CURRENT` to know whether an adapter is active at this layer. Nothing here imports the rest of
s0, so every kind file stays a leaf of the import graph.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LayerInjection:
    """What an active adapter wants at one recurrent layer. Callables so alpha/normalisation apply at call time."""

    kind: str  # a key of s0.adapters.kinds.KINDS
    initial_state: Callable[[], torch.Tensor] | None = None  # () -> the layer's state shape (no batch dim)
    readout_offset: Callable[[], torch.Tensor] | None = None  # same shape, added to every step's readout
    fix_padding: bool = True  # False reproduces the naive injection (tests show it is batch-variant)


@dataclass
class Call:
    """Set while an adapted mixer runs: its layer's injection and the 2D pad mask."""

    inj: LayerInjection
    mask: torch.Tensor | None  # (batch, seq) 1 = real token, 0 = pad; None = no padding
    # No state in the cache for this layer yet (no cache, or an empty one). Kernels with an initial-state
    # argument read this from the argument itself; a kind whose kernel has none (Mamba-1) reads it here.
    fresh: bool = True


CURRENT: contextvars.ContextVar[Call | None] = contextvars.ContextVar("s0_injection_call", default=None)


# On while s0.decode runs a compiled decode step in which it checked that no adapter acts (per_step_layers).
STEP_WITHOUT_CALLS = {"on": False}


@contextlib.contextmanager
def step_without_calls() -> Iterator[None]:
    """s0.decode's compiled step: inside it a trace reads "no call" without touching the context variable."""
    STEP_WITHOUT_CALLS["on"] = True
    try:
        yield
    finally:
        STEP_WITHOUT_CALLS["on"] = False


def current_call() -> Call | None:
    """The active call, which a dispatcher reads.

    dynamo cannot trace ContextVar.get: it breaks the graph there, at every dispatcher, and its per-layer resumed
    frames exhaust the recompile limit, after which it runs them eager without a word (slow, issue 13). Inside
    s0.decode's compiled step (`step_without_calls`, entered only when no adapter acts at a cached step: S0's
    hooks skip those steps, state-offset is refused) a trace reads None. Anywhere else, e.g. a user's
    torch.compile of a model with S0 active, the context variable is read as always: correct, graph break and all."""
    if STEP_WITHOUT_CALLS["on"] and torch.compiler.is_compiling():
        return None
    return CURRENT.get()


# kernel family -> "native" (whatever transformers resolved: fla / mamba-ssm / torch), "torch" (always the
# PyTorch reference), "torch_when_grad" (PyTorch only when a backward will run through the call). Mamba-1 and
# Mamba-2 share "mamba": both come from the mamba-ssm package.
ROUTE: dict[str, str] = {"gdn": "native", "mamba": "native"}
# Whether transformers can have picked the optimized package at import time (find_spec imports nothing).
PACKAGE_PRESENT = {
    "gdn": importlib.util.find_spec("fla") is not None,
    "mamba": importlib.util.find_spec("mamba_ssm") is not None,
}
# Test hook: replace a kernel by a callable with the same signature (e.g. a float64 reference for gradcheck).
OVERRIDE: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class Kind:
    """One recurrence kind: everything injection.py and models.py need to know about it."""

    name: str  # "gdn", "mamba2", ... (RecurrentLayer.kind, saved in adapter sidecars)
    family: str  # kernel routing family, a key of ROUTE
    dispatchers: dict[str, Callable[[str, Callable], Callable]]  # kernel name -> dispatcher factory
    modules: tuple[str, ...]  # transformers modeling modules whose mixers call these kernels
    state_shape: Callable[
        [nn.Module], tuple[int, ...] | None
    ]  # the mixer's per-sequence state, None if not ours
    kernel_note: str = ""  # how S0 reaches the kernel, for provenance

    @property
    def kernels(self) -> tuple[str, ...]:
        return tuple(self.dispatchers)


def needs_grad(*tensors: Any) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def resolve(name: str, family: str, orig: Callable, *tensors: Any) -> Callable:
    """The function to run for kernel `name` now: an override, transformers' PyTorch function, or `orig`."""
    if name in OVERRIDE:
        return OVERRIDE[name]
    route = ROUTE[family]
    on_cpu = bool(tensors) and isinstance(tensors[0], torch.Tensor) and tensors[0].device.type == "cpu"
    if (
        route == "torch"
        or (route == "torch_when_grad" and needs_grad(*tensors))
        or (on_cpu and PACKAGE_PRESENT[family])  # fla / mamba-ssm are CUDA (Triton) kernels
    ):
        # functools.wraps in transformers' kernel decorator keeps the PyTorch function as __wrapped__.
        return getattr(orig, "__wrapped__", orig)
    return orig


def keep_mask(call: Call, seq_len: int) -> torch.Tensor | None:
    """(batch, seq) bool, True at real tokens; None when there is nothing to fix."""
    if call.mask is None or not call.inj.fix_padding:
        return None
    mask = call.mask[:, -seq_len:]
    return mask.to(torch.bool)


def states_for(state: torch.Tensor, n: int) -> torch.Tensor:
    # (H, K, V) -> (n, H, K, V); contiguous because fused kernels index raw memory.
    return state.unsqueeze(0).expand(n, *state.shape).contiguous()


def zero_at_pads(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`t` (B, T, ...) with every padded step set to 0."""
    keep = keep.reshape(*keep.shape, *([1] * (t.dim() - 2)))
    return torch.where(keep, t, torch.zeros((), dtype=t.dtype, device=t.device))


def declining(family: str) -> Callable[[str, Callable], Callable]:
    """Dispatcher factory for a fused training kernel that takes no initial state (mamba-ssm's conv+scan): with
    an adapter active it would silently drop S0, so it returns None, and the mixer takes its unfused path."""

    def factory(name: str, orig: Callable) -> Callable:
        @functools.wraps(orig)
        def run(*args, **kwargs):
            if current_call() is not None:
                return None
            return resolve(name, family, orig, *args[:1])(*args, **kwargs)

        run._s0_original = orig
        return run

    return factory


def gated_decode(readout: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """Dispatcher factory for a Mamba decode-step kernel (Mamba-1 and Mamba-2 alike). Only state-offset acts at a
    decode step: its readout is added before the output gate, as in the scan, y = (C (S_t + dS) + D x) * silu(z).
    `readout(C, offset, x)` is the kind's C dS in the kernel's output layout."""

    def factory(name: str, orig: Callable) -> Callable:
        @functools.wraps(orig)
        def run(state, hidden_states, dt, A, B, C, *args, **kwargs):
            call = current_call()
            impl = resolve(name, "mamba", orig, hidden_states, B, C)
            if call is None or call.inj.readout_offset is None:
                return impl(state, hidden_states, dt, A, B, C, *args, **kwargs)
            z = kwargs.pop("z", None)
            out = impl(state, hidden_states, dt, A, B, C, *args, z=None, **kwargs)
            offset = call.inj.readout_offset().to(out.dtype)
            out = out + readout(C.to(out.dtype), offset, hidden_states)
            if z is not None:
                out = out * F.silu(z.to(out.dtype))
            return out.to(hidden_states.dtype)

        run._s0_original = orig
        return run

    return factory


def heads(t: torch.Tensor, n_heads: int, dim: int) -> torch.Tensor:
    """Repeat grouped B/C (n_groups) up to n_heads along `dim`."""
    return t.repeat_interleave(n_heads // t.shape[dim], dim=dim) if t.shape[dim] != n_heads else t
