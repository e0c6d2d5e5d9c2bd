"""Where a learned state enters the recurrence: thin dispatchers around transformers' kernel functions.

transformers 5.23 mixers call module-level kernel functions, resolved from the module's globals at call time:

    Qwen3.5 GatedDeltaNet   torch_chunk_gated_delta_rule (prefill, initial_state=None unless a cache has a state)
                            torch_recurrent_gated_delta_rule (one-token cached decode)
    FalconH1 Mamba-2 mixer  mamba2_chunk_scan (prefill), mamba2_selective_state_update (decode),
                            mamba2_split_conv1d_scan_combined (fused training path; takes no initial state)

`install` replaces those names, once, with dispatchers. Per-mixer forward hooks (added by `attach` while an adapter
is active) put a `_Call` in a context variable: the layer's `LayerInjection` and its 2D pad mask. A dispatcher
with no `_Call` runs the original kernel with the original arguments, so a model with no active adapter computes
exactly what it computed before. With a `_Call` it

  * injects `initial_state` only when the kernel starts a fresh sequence (initial_state is None: no cache, or the
    first prefill into an empty cache). Later segments and decode steps read the cache, never S0 again;
  * makes padded steps the identity. Left pads have q=k=v=0 (GDN) or x=B=C=0 (Mamba-2) but a nonzero decay, so
    without this a nonzero initial state reaches the first real token shrunk by a pad-length dependent factor.
    GDN: g=0 and beta=0 at pads (no decay, no erase, no write). Mamba-2: dt_eff=softplus(dt+dt_bias) clamped, set
    to 0 at pads, passed with dt_bias=None, dt_softplus=False (decay exp(0*A)=1, write 0*B*x=0);
  * adds a readout offset at every step for state-offset (output uses S_t + dS);
  * makes the fused Mamba-2 training path decline (return None), so FalconH1 takes the path that takes a state.

Backend routing (s0.backends) also goes through these dispatchers: `set_route("gdn", "torch_when_grad")` sends
calls that need a backward to transformers' PyTorch kernel (the decorated function's `__wrapped__`).
"""

from __future__ import annotations

import contextvars
import functools
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from s0.models import RecurrentLayer

GDN_KERNELS = ("torch_chunk_gated_delta_rule", "torch_recurrent_gated_delta_rule")
MAMBA_KERNELS = ("mamba2_chunk_scan", "mamba2_selective_state_update", "mamba2_split_conv1d_scan_combined")
KNOWN_MODULES = (
    "transformers.models.qwen3_5.modeling_qwen3_5",
    "transformers.models.falcon_h1.modeling_falcon_h1",
)


class InjectionError(RuntimeError):
    """The model's mixers do not call kernels this module knows how to route a state into."""


@dataclass
class LayerInjection:
    """What an active adapter wants at one recurrent layer. Callables so alpha/normalisation apply at call time."""

    kind: str  # "gdn" | "mamba2"
    initial_state: Callable[[], torch.Tensor] | None = None  # () -> (H, K, V) GDN or (H, P, N) Mamba-2
    readout_offset: Callable[[], torch.Tensor] | None = None  # same shape, added to every step's readout
    fix_padding: bool = True  # False reproduces the naive injection (tests show it is batch-variant)


@dataclass
class _Call:
    inj: LayerInjection
    mask: torch.Tensor | None  # (batch, seq) 1 = real token, 0 = pad; None = no padding


_CURRENT: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("s0_injection_call", default=None)
# kernel family -> "native" (whatever transformers resolved: fla / mamba-ssm / torch), "torch" (always the
# PyTorch reference), "torch_when_grad" (PyTorch only when a backward will run through the call).
_ROUTE: dict[str, str] = {"gdn": "native", "mamba": "native"}
# Whether transformers can have picked the optimized package at import time (find_spec imports nothing).
_PACKAGE_PRESENT = {
    "gdn": importlib.util.find_spec("fla") is not None,
    "mamba": importlib.util.find_spec("mamba_ssm") is not None,
}
# Test hook: replace a kernel by a callable with the same signature (e.g. a float64 reference for gradcheck).
_OVERRIDE: dict[str, Callable[..., Any]] = {}


def set_route(family: str, route: str) -> None:
    if family not in _ROUTE or route not in ("native", "torch", "torch_when_grad"):
        raise ValueError(f"bad route {family}={route}")
    _ROUTE[family] = route


def get_routes() -> dict[str, str]:
    return dict(_ROUTE)


class override_kernel:
    """`with override_kernel("torch_chunk_gated_delta_rule", fn): ...` routes that kernel name to `fn`."""

    def __init__(self, name: str, fn: Callable[..., Any]):
        self.name, self.fn = name, fn

    def __enter__(self):
        self.prev = _OVERRIDE.get(self.name)
        _OVERRIDE[self.name] = self.fn
        return self

    def __exit__(self, *exc):
        if self.prev is None:
            _OVERRIDE.pop(self.name, None)
        else:
            _OVERRIDE[self.name] = self.prev


def _needs_grad(*tensors: Any) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def _impl(name: str, family: str, orig: Callable, *tensors: Any) -> Callable:
    if name in _OVERRIDE:
        return _OVERRIDE[name]
    route = _ROUTE[family]
    on_cpu = bool(tensors) and isinstance(tensors[0], torch.Tensor) and tensors[0].device.type == "cpu"
    if (
        route == "torch"
        or (route == "torch_when_grad" and _needs_grad(*tensors))
        or (on_cpu and _PACKAGE_PRESENT[family])  # fla / mamba-ssm are CUDA (Triton) kernels
    ):
        # functools.wraps in transformers' kernel decorator keeps the PyTorch function as __wrapped__.
        return getattr(orig, "__wrapped__", orig)
    return orig


def _keep_mask(call: _Call, seq_len: int) -> torch.Tensor | None:
    """(batch, seq) bool, True at real tokens; None when there is nothing to fix."""
    if call.mask is None or not call.inj.fix_padding:
        return None
    mask = call.mask[:, -seq_len:]
    return mask.to(torch.bool)


def _states_for(state: torch.Tensor, n: int) -> torch.Tensor:
    # (H, K, V) -> (n, H, K, V); contiguous because fused kernels index raw memory.
    return state.unsqueeze(0).expand(n, *state.shape).contiguous()


# ---------------------------------------------------------------- GatedDeltaNet
def _gdn_readout(query: torch.Tensor, offset: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """q_t^T dS per head, with the kernel's own q preprocessing. query (B, T, Hk, K), offset (Hv, K, V)."""
    n_v = offset.shape[0]
    q = query.to(torch.promote_types(query.dtype, torch.float32))
    if q.shape[2] != n_v:  # grouped value attention: each q/k head serves n_v // n_k consecutive value heads
        q = q.repeat_interleave(n_v // q.shape[2], dim=2)
    if kwargs.get("use_qk_l2norm_in_kernel", False):
        q = q * torch.rsqrt((q * q).sum(dim=-1, keepdim=True) + 1e-6)
    scale = kwargs.get("scale") or q.shape[-1] ** -0.5
    return torch.einsum("bthk,hkv->bthv", q * scale, offset.to(q.dtype))  # (B, T, Hv, V)


def _gdn_dispatch(name: str, orig: Callable) -> Callable:
    fresh_capable = name == "torch_chunk_gated_delta_rule"

    @functools.wraps(orig)
    def dispatch(query, key, value, *args, **kwargs):
        call = _CURRENT.get()
        if call is None:
            return _impl(name, "gdn", orig, query, key, value, kwargs.get("initial_state"))(
                query, key, value, *args, **kwargs
            )
        if args:  # transformers passes g and beta by keyword; accept positional too
            kwargs.update(zip(("g", "beta"), args))
        g, beta = kwargs["g"], kwargs["beta"]  # (B, T, Hv) each; g is log-decay
        batch, seq_len = query.shape[:2]
        keep = _keep_mask(call, seq_len)
        if keep is not None:
            kwargs["g"] = torch.where(keep[..., None], g, torch.zeros((), dtype=g.dtype, device=g.device))
            kwargs["beta"] = torch.where(
                keep[..., None], beta, torch.zeros((), dtype=beta.dtype, device=beta.device)
            )
        if fresh_capable and kwargs.get("initial_state") is None and call.inj.initial_state is not None:
            cu = kwargs.get("cu_seqlens")
            n_seq = batch if cu is None else cu.numel() - 1  # varlen packing: one state per sequence
            kwargs["initial_state"] = _states_for(call.inj.initial_state(), n_seq)
        impl = _impl(name, "gdn", orig, query, key, value, kwargs.get("initial_state"))
        out, final_state = impl(query, key, value, **kwargs)
        if call.inj.readout_offset is not None:
            out = out + _gdn_readout(query, call.inj.readout_offset(), kwargs).to(out.dtype)
        return out, final_state

    dispatch._s0_original = orig
    return dispatch


# ---------------------------------------------------------------- Mamba-2
def _heads(t: torch.Tensor, n_heads: int, dim: int) -> torch.Tensor:
    return t.repeat_interleave(n_heads // t.shape[dim], dim=dim) if t.shape[dim] != n_heads else t


def _mamba_chunk_dispatch(name: str, orig: Callable) -> Callable:
    @functools.wraps(orig)
    def dispatch(hidden_states, dt, A, B, C, *args, **kwargs):
        call = _CURRENT.get()
        if call is None:
            impl = _impl(name, "mamba", orig, hidden_states, dt, B, C, kwargs.get("initial_states"))
            return impl(hidden_states, dt, A, B, C, *args, **kwargs)
        batch, seq_len, n_heads, _ = hidden_states.shape  # x (B, T, H, P); dt (B, T, H); B, C (B, T, G, N)
        keep = _keep_mask(call, seq_len)
        if keep is not None:
            # Discretise here, exactly as the kernel would, then zero dt at pads: decay exp(0 * A) = 1, write 0.
            work = torch.promote_types(dt.dtype, torch.float32)
            dt = dt.to(work)
            dt_bias = kwargs.pop("dt_bias", None)
            if dt_bias is not None:
                dt = dt + dt_bias.to(work)
            if kwargs.pop("dt_softplus", False):
                dt = F.softplus(dt)
            lo, hi = kwargs.pop("dt_limit", (0.0, math.inf))
            dt = torch.clamp(dt, min=lo, max=hi)
            dt = torch.where(keep[..., None], dt, torch.zeros((), dtype=dt.dtype, device=dt.device))
            kwargs.update(dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf))
        if kwargs.get("initial_states") is None and call.inj.initial_state is not None:
            kwargs["initial_states"] = _states_for(call.inj.initial_state(), batch)  # (B, H, P, N)
        impl = _impl(name, "mamba", orig, hidden_states, dt, B, C, kwargs.get("initial_states"))
        result = impl(hidden_states, dt, A, B, C, *args, **kwargs)
        if call.inj.readout_offset is None:
            return result
        out, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, None)
        c = _heads(C, n_heads, dim=2).to(out.dtype)  # (B, T, H, N)
        out = out + torch.einsum("bthn,hpn->bthp", c, call.inj.readout_offset().to(out.dtype))
        return (out, *rest) if rest is not None else out

    dispatch._s0_original = orig
    return dispatch


def _mamba_decode_dispatch(name: str, orig: Callable) -> Callable:
    @functools.wraps(orig)
    def dispatch(state, hidden_states, dt, A, B, C, *args, **kwargs):
        call = _CURRENT.get()
        impl = _impl(name, "mamba", orig, hidden_states, B, C)
        if call is None or call.inj.readout_offset is None:
            return impl(state, hidden_states, dt, A, B, C, *args, **kwargs)
        # Offset is read before the output gate, as in the chunk path: y = (C (S_t + dS) + D x) * silu(z).
        z = kwargs.pop("z", None)
        out = impl(state, hidden_states, dt, A, B, C, *args, z=None, **kwargs)  # (B, H, P)
        c = _heads(C, hidden_states.shape[1], dim=1).to(out.dtype)  # (B, H, N)
        out = out + torch.einsum("bhn,hpn->bhp", c, call.inj.readout_offset().to(out.dtype))
        if z is not None:
            out = out * F.silu(z.to(out.dtype))
        return out.to(hidden_states.dtype)

    dispatch._s0_original = orig
    return dispatch


def _mamba_fused_dispatch(name: str, orig: Callable) -> Callable:
    @functools.wraps(orig)
    def dispatch(*args, **kwargs):
        # mamba-ssm's fused conv+scan takes no initial state: with an adapter active it would silently drop S0.
        # Returning None makes FalconH1Mixer take its unfused path, which the chunk dispatcher handles.
        if _CURRENT.get() is not None:
            return None
        return _impl(name, "mamba", orig, *args[:1])(*args, **kwargs)

    dispatch._s0_original = orig
    return dispatch


_FACTORIES: dict[str, Callable[[str, Callable], Callable]] = {
    "torch_chunk_gated_delta_rule": _gdn_dispatch,
    "torch_recurrent_gated_delta_rule": _gdn_dispatch,
    "mamba2_chunk_scan": _mamba_chunk_dispatch,
    "mamba2_selective_state_update": _mamba_decode_dispatch,
    "mamba2_split_conv1d_scan_combined": _mamba_fused_dispatch,
}


def install(module: ModuleType, kind: str) -> None:
    """Replace the kernel names of `kind` ("gdn" | "mamba2") in a modeling module; idempotent."""
    names = GDN_KERNELS if kind == "gdn" else MAMBA_KERNELS
    missing = [n for n in names if not hasattr(module, n)]
    if missing:
        raise InjectionError(
            f"{module.__name__} has no {', '.join(missing)}: this transformers version wires the recurrence "
            "differently, so the state cannot be injected (S0 needs transformers >= 5.23)."
        )
    for n in names:
        current = getattr(module, n)
        if not hasattr(current, "_s0_original"):
            setattr(module, n, _FACTORIES[n](n, current))


def uninstall(module: ModuleType) -> None:
    """Put the original kernels back (tests; normal use leaves the pass-through dispatchers in place)."""
    for n in GDN_KERNELS + MAMBA_KERNELS:
        current = getattr(module, n, None)
        if current is not None and hasattr(current, "_s0_original"):
            setattr(module, n, current._s0_original)


def install_known() -> list[str]:
    """Install into every known modeling module that imports; returns their names (backends call this)."""
    done = []
    for mod_name in KNOWN_MODULES:
        try:
            module = __import__(mod_name, fromlist=["_"])
        except ImportError:
            continue
        install(module, "gdn" if "qwen" in mod_name else "mamba2")
        done.append(mod_name)
    return done


def original(module: ModuleType, name: str) -> Callable:
    """The kernel transformers resolved (fla / mamba-ssm / PyTorch), under any dispatcher."""
    fn = getattr(module, name)
    return getattr(fn, "_s0_original", fn)


def pytorch_kernel(module: ModuleType, name: str) -> Callable:
    """transformers' own PyTorch implementation of a kernel name, whatever package it resolved to."""
    fn = original(module, name)
    return getattr(fn, "__wrapped__", fn)


# ---------------------------------------------------------------- hooks
class Attachment:
    """Forward hooks on the selected mixers; `remove()` leaves the model exactly as it was."""

    def __init__(self, layers: list[RecurrentLayer], injections: dict[int, LayerInjection]):
        self.handles: list[Any] = []
        for layer in layers:
            if layer.index not in injections:
                continue
            install(sys.modules[type(layer.module).__module__], layer.kind)
            inj = injections[layer.index]
            tokens: list[Any] = []  # stack: a mixer can be re-entered by gradient-checkpoint recomputation
            hook = _pre_hook(inj, tokens, _mixer_args(layer.module))
            self.handles.append(layer.module.register_forward_pre_hook(hook, with_kwargs=True))
            self.handles.append(layer.module.register_forward_hook(_post_hook(tokens), always_call=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


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
        tokens.append(_CURRENT.set(_Call(inj, mask)))
        return None

    return hook


def _post_hook(tokens: list[Any]) -> Callable:
    def hook(module: nn.Module, args: tuple, output: Any):
        token = tokens.pop() if tokens else None
        if token is not None:
            _CURRENT.reset(token)
        return None

    return hook


def attach(layers: list[RecurrentLayer], injections: dict[int, LayerInjection]) -> Attachment:
    return Attachment(layers, injections)
