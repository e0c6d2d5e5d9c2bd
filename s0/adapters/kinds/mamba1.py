"""Mamba-1 / selective scan (transformers `mamba`): a diagonal state, one (d_inner, d_state) matrix per layer.

Per channel d and state index n, with dt_t = softplus(dt_raw + dt_bias) > 0 and A = -exp(A_log) < 0:

    h_t[d, n] = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] B_t[n] x_t[d]
    y_t[d]    = (sum_n C_t[n] h_t[d, n] + D[d] x_t[d]) * silu(z_t[d])

transformers' MambaMixer calls `mamba_selective_scan` (mamba-ssm's selective_scan_fn, or a PyTorch loop) for a
prompt, `mamba_selective_state_update` for a cached one-token step, and `mamba_inner_fn` (mamba-ssm's fused
training path; the PyTorch fallback returns None) in training without a cache. Neither scan takes an initial
state: both start every prompt from zero. The recurrence is linear in h, so a prompt started from S0 is the
zero-start scan plus S0 decayed by the running product of the gates:

    h_t = h_t(zero start) + P_t * S0,    P_t[d, n] = exp(A[d, n] * sum_{s<=t} dt_s[d])
    y_t = y_t(zero start) + sum_n C_t[n] P_t[d, n] S0[d, n]            (before the gate)

The scan dispatcher runs the kernel (whichever the route picks) without its gate, adds the S0 term in PyTorch,
gates, and adds P_T * S0 to the final state the cache keeps. Exact in exact arithmetic; the S0 term and its
gradient never go through the kernel. Pads are made the identity as for Mamba-2 (dt computed here, set to 0 at
pads, passed with delta_bias=None and delta_softplus=False: decay exp(0) = 1, write 0); state-offset adds
C_t dS before the gate in prefill and decode; the fused training path declines while an adapter is active.

transformers runs a multi-token prompt into a cache that already holds a state from zero again (its scan has no
initial state); S0 is then not injected either (`Call.fresh`), so it enters once, before the first token.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from s0.adapters.kinds.common import Kind, current_call, declining, gated_decode, keep_mask, resolve


def scan_dispatch(name: str, orig: Callable) -> Callable:
    @functools.wraps(orig)
    def run(hidden_states, dt, A, B, C, *args, **kwargs):
        call = current_call()
        if call is None:
            return resolve(name, "mamba", orig, hidden_states, dt, B, C)(
                hidden_states, dt, A, B, C, *args, **kwargs
            )
        if args:  # transformers passes D onwards by keyword; accept positional too
            kwargs.update(zip(("D", "z", "delta_bias", "delta_softplus", "return_last_state"), args))
        # channel-first layout: x, dt, z (B, D, T); A (D, N); B, C (B, N, T)
        seq_len = hidden_states.shape[-1]
        keep = keep_mask(call, seq_len)
        s0 = call.inj.initial_state() if call.inj.initial_state is not None and call.fresh else None
        dt_eff = dt  # what the S0 term decays with: dt after bias and softplus, 0 at pads
        if keep is not None or s0 is not None:
            # Discretise here, exactly as the kernel would: the S0 term needs dt_eff, and pads need dt_eff = 0.
            work = torch.promote_types(dt.dtype, torch.float32)
            dt_eff = dt.to(work)
            if kwargs.get("delta_bias") is not None:
                dt_eff = dt_eff + kwargs["delta_bias"].to(work)[..., None]
            if kwargs.get("delta_softplus", False):
                dt_eff = F.softplus(dt_eff)
            if keep is not None:
                dt_eff = torch.where(keep[:, None, :], dt_eff, torch.zeros((), dtype=work, device=dt.device))
                # The kernel gets the discretised dt only when there are pads to zero, and in the input's dtype:
                # mamba-ssm's CUDA scan requires delta to have u's dtype (selective_scan.cpp checks it).
                dt = dt_eff.to(dt.dtype)
                kwargs.update(delta_bias=None, delta_softplus=False)
        z = kwargs.pop("z", None)
        impl = resolve(name, "mamba", orig, hidden_states, dt, B, C)
        result = impl(hidden_states, dt, A, B, C, z=None, **kwargs)
        out, last = result if kwargs.get("return_last_state", False) else (result, None)
        out = out.to(torch.promote_types(out.dtype, torch.float32))  # the mixer casts back after the scan
        if s0 is not None:
            work = torch.promote_types(out.dtype, s0.dtype)
            # P_t = exp(A * sum_{s<=t} dt_s), (B, D, T, N): what S0 has decayed to at each step
            decay = torch.exp(A.to(work)[None, :, None, :] * torch.cumsum(dt_eff.to(work), dim=-1)[..., None])
            s0 = s0.to(work)
            out = out.to(work) + torch.einsum("bdtn,bnt,dn->bdt", decay, C.to(work), s0)
            if last is not None:
                last = last + (decay[:, :, -1] * s0).to(last.dtype)
        if call.inj.readout_offset is not None:
            offset = call.inj.readout_offset()
            out = out.to(torch.promote_types(out.dtype, offset.dtype))
            out = out + torch.einsum("bnt,dn->bdt", C.to(out.dtype), offset.to(out.dtype))
        if z is not None:
            out = out * F.silu(z.to(out.dtype))
        return (out, last) if kwargs.get("return_last_state", False) else out

    run._s0_original = orig
    return run


# decode step, (B, D) output: C (B, N) read through the offset (D, N)
decode_dispatch = gated_decode(lambda c, offset, x: torch.einsum("bn,dn->bd", c, offset))


def state_shape(module: nn.Module) -> tuple[int, int] | None:
    """(d_inner, d_state): a Mamba-1 mixer has a 2D A_log (one decay per channel and state index)."""
    a_log = getattr(module, "A_log", None)
    if isinstance(a_log, torch.Tensor) and a_log.dim() == 2 and hasattr(module, "intermediate_size"):
        return (module.intermediate_size, module.ssm_state_size)
    return None


KIND = Kind(
    name="mamba1",
    family="mamba",
    dispatchers={
        "mamba_selective_scan": scan_dispatch,
        "mamba_selective_state_update": decode_dispatch,
        "mamba_inner_fn": declining("mamba"),
    },
    # The same kernel names and mixer layout: FalconMamba (RMS-normed B, C, dt before the scan) and Jamba's
    # Mamba layers (tests/test_kind_mamba1.py runs tiny ones of each).
    modules=(
        "transformers.models.mamba.modeling_mamba",
        "transformers.models.falcon_mamba.modeling_falcon_mamba",
        "transformers.models.jamba.modeling_jamba",
    ),
    state_shape=state_shape,
    kernel_note=(
        "Mamba-1: the selective scan takes no initial state; the kernel (mamba-ssm or PyTorch) runs the zero-start "
        "scan and the S0 term (C_t exp(A cumsum dt) S0, exact by linearity) is added in PyTorch; fused path declined"
    ),
)
