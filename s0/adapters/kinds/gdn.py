"""GatedDeltaNet (Qwen3.5, Qwen3-Next): a matrix state per value head, S_t = a_t S_{t-1} (I - b_t k_t k_t^T) + ...

transformers' mixer calls `torch_chunk_gated_delta_rule` for prefill (initial_state=None unless a cache holds a
state) and `torch_recurrent_gated_delta_rule` for a one-token cached decode step. The dispatcher

  * injects `initial_state` only when the chunk kernel starts a fresh sequence (initial_state is None);
  * makes pads the identity: g=0 (log-decay: no decay) and beta=0 (no erase, no write) at padded steps;
  * adds the state-offset readout q_t^T dS to every step's output.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from s0.adapters.kinds.common import Kind, current_call, keep_mask, resolve, states_for, zero_at_pads


def readout(query: torch.Tensor, offset: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    """q_t^T dS per head, with the kernel's own q preprocessing. query (B, T, Hk, K), offset (Hv, K, V)."""
    n_v = offset.shape[0]
    q = query.to(torch.promote_types(query.dtype, torch.float32))
    if q.shape[2] != n_v:  # grouped value attention: each q/k head serves n_v // n_k consecutive value heads
        q = q.repeat_interleave(n_v // q.shape[2], dim=2)
    if kwargs.get("use_qk_l2norm_in_kernel", False):
        q = q * torch.rsqrt((q * q).sum(dim=-1, keepdim=True) + 1e-6)
    scale = kwargs.get("scale") or q.shape[-1] ** -0.5
    return torch.einsum("bthk,hkv->bthv", q * scale, offset.to(q.dtype))  # (B, T, Hv, V)


def with_state(
    name: str, orig: Callable, call: Any, fresh_capable: bool, query, key, value, kwargs: dict[str, Any]
) -> tuple[torch.Tensor, Any]:
    """One delta-rule kernel call with an adapter active (GDN and KDA share it): g and beta zeroed at pads
    (per head or per channel, whatever g's shape), S0 as `initial_state` when the chunk kernel starts a fresh
    sequence, and the state-offset readout added to the output."""
    batch, seq_len = query.shape[:2]
    keep = keep_mask(call, seq_len)
    if keep is not None:  # g (log-decay) and beta are (B, T, H[, K])
        kwargs["g"] = zero_at_pads(kwargs["g"], keep)
        kwargs["beta"] = zero_at_pads(kwargs["beta"], keep)
    if fresh_capable and kwargs.get("initial_state") is None and call.inj.initial_state is not None:
        cu = kwargs.get("cu_seqlens")
        n_seq = batch if cu is None else cu.numel() - 1  # varlen packing: one state per sequence
        kwargs["initial_state"] = states_for(call.inj.initial_state(), n_seq)
    impl = resolve(name, "gdn", orig, query, key, value, kwargs.get("initial_state"))
    out, final_state = impl(query, key, value, **kwargs)
    if call.inj.readout_offset is not None:
        out = out + readout(query, call.inj.readout_offset(), kwargs).to(out.dtype)
    return out, final_state


def dispatch(name: str, orig: Callable) -> Callable:
    """Dispatcher for both GDN kernels (chunk and recurrent); only the chunk kernel starts fresh sequences."""
    fresh_capable = name == "torch_chunk_gated_delta_rule"

    @functools.wraps(orig)
    def run(query, key, value, *args, **kwargs):
        call = current_call()
        if call is None:
            return resolve(name, "gdn", orig, query, key, value, kwargs.get("initial_state"))(
                query, key, value, *args, **kwargs
            )
        if args:  # transformers passes g and beta by keyword; accept positional too
            kwargs.update(zip(("g", "beta"), args))
        return with_state(name, orig, call, fresh_capable, query, key, value, kwargs)

    run._s0_original = orig
    return run


def state_shape(module: nn.Module) -> tuple[int, int, int] | None:
    """(value heads, key dim, value dim), found by structure so Qwen3-Next style GDN layers work too."""
    if type(module).__name__.endswith("GatedDeltaNet"):
        return (module.num_v_heads, module.head_k_dim, module.head_v_dim)
    return None


KIND = Kind(
    name="gdn",
    family="gdn",
    dispatchers={"torch_chunk_gated_delta_rule": dispatch, "torch_recurrent_gated_delta_rule": dispatch},
    # Every registered GDN family (tests/test_models.py checks each tiny model's mixer module is listed).
    modules=(
        "transformers.models.qwen3_5.modeling_qwen3_5",
        "transformers.models.qwen3_5_moe.modeling_qwen3_5_moe",
        "transformers.models.qwen3_next.modeling_qwen3_next",
        "transformers.models.lara_mini.modeling_lara_mini",
    ),
    state_shape=state_shape,
    kernel_note="GDN: the chunk kernel's initial_state argument (fla or PyTorch)",
)
