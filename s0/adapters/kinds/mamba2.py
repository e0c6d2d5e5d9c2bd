"""Mamba-2 / SSD (FalconH1): a matrix state per head, S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T, y_t = S_t C_t + D x_t.

transformers' mixer calls `mamba2_chunk_scan` for prefill, `mamba2_selective_state_update` for a cached decode
step, and `mamba2_split_conv1d_scan_combined` (mamba-ssm's fused conv+scan) in training without a cache. The
dispatchers

  * inject `initial_states` when the chunk scan starts a fresh sequence (initial_states is None);
  * make pads the identity: dt_eff = softplus(dt + dt_bias), clamped, is computed here, set to 0 at pads and
    passed with dt_bias=None, dt_softplus=False (decay exp(0 * A) = 1, write 0 * B * x = 0);
  * add the state-offset readout C_t dS before the output gate, in prefill and decode;
  * make the fused path decline (return None) while an adapter is active: it takes no initial state, and
    FalconH1 falls back to its unfused path when it returns None.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from s0.adapters.kinds.common import (
    Kind,
    current_call,
    declining,
    gated_decode,
    heads,
    keep_mask,
    resolve,
    states_for,
    zero_at_pads,
)


def chunk_dispatch(name: str, orig: Callable) -> Callable:
    @functools.wraps(orig)
    def run(hidden_states, dt, A, B, C, *args, **kwargs):
        call = current_call()
        if call is None:
            impl = resolve(name, "mamba", orig, hidden_states, dt, B, C, kwargs.get("initial_states"))
            return impl(hidden_states, dt, A, B, C, *args, **kwargs)
        batch, seq_len, n_heads, _ = hidden_states.shape  # x (B, T, H, P); dt (B, T, H); B, C (B, T, G, N)
        keep = keep_mask(call, seq_len)
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
            dt = zero_at_pads(torch.clamp(dt, min=lo, max=hi), keep)
            kwargs.update(dt_bias=None, dt_softplus=False, dt_limit=(0.0, math.inf))
        if kwargs.get("initial_states") is None and call.inj.initial_state is not None:
            kwargs["initial_states"] = states_for(call.inj.initial_state(), batch)  # (B, H, P, N)
        impl = resolve(name, "mamba", orig, hidden_states, dt, B, C, kwargs.get("initial_states"))
        result = impl(hidden_states, dt, A, B, C, *args, **kwargs)
        if call.inj.readout_offset is None:
            return result
        out, rest = (result[0], result[1:]) if isinstance(result, tuple) else (result, None)
        c = heads(C, n_heads, dim=2).to(out.dtype)  # (B, T, H, N)
        out = out + torch.einsum("bthn,hpn->bthp", c, call.inj.readout_offset().to(out.dtype))
        return (out, *rest) if rest is not None else out

    run._s0_original = orig
    return run


# decode step, (B, H, P) output: C (B, G, N) expanded to the heads of x (B, H, P), read through the offset (H, P, N)
decode_dispatch = gated_decode(
    lambda c, offset, x: torch.einsum("bhn,hpn->bhp", heads(c, x.shape[1], dim=1), offset)
)


# mamba-ssm's fused conv+scan takes no initial state; FalconH1 takes its unfused path when this returns None.
fused_dispatch = declining("mamba")


def state_shape(module: nn.Module) -> tuple[int, int, int] | None:
    """(heads, head dim, d_state): a Mamba-2 mixer has a per-head A_log and a head_dim."""
    if hasattr(module, "ssm_state_size") and hasattr(module, "A_log") and hasattr(module, "head_dim"):
        return (module.num_heads, module.head_dim, module.ssm_state_size)
    return None


KIND = Kind(
    name="mamba2",
    family="mamba",
    dispatchers={
        "mamba2_chunk_scan": chunk_dispatch,
        "mamba2_selective_state_update": decode_dispatch,
        "mamba2_split_conv1d_scan_combined": fused_dispatch,
    },
    # Every registered Mamba-2 family (tests/test_models.py checks each tiny model's mixer module is listed).
    modules=(
        "transformers.models.falcon_h1.modeling_falcon_h1",
        "transformers.models.bamba.modeling_bamba",
        "transformers.models.granitemoehybrid.modeling_granitemoehybrid",
        "transformers.models.nemotron_h.modeling_nemotron_h",
        "transformers.models.zamba2.modeling_zamba2",
        "transformers.models.mamba2.modeling_mamba2",
    ),
    state_shape=state_shape,
    kernel_note="Mamba-2: the chunk scan's initial_states argument (mamba-ssm or PyTorch); fused path declined",
)
