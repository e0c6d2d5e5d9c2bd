"""Kimi Delta Attention (transformers `kimi_linear`): a matrix state per head, a gated delta rule whose decay is
per key channel (fine-grained) instead of one scalar per head as in GatedDeltaNet:

    S_t = diag(exp(g_t)) S_{t-1}                     g_t (K,) <= 0, one log-decay per key channel
    S_t = S_t + beta_t k_t (v_t - S_t^T k_t)^T        delta rule: erase along k_t, write v_t
    o_t = S_t^T q_t                                   q_t, k_t L2-normalised, q_t scaled by K^-1/2

transformers' KimiLinearDeltaAttention calls `chunk_kimi_delta_attention` for a prompt (initial_state = the
cache's state, None when there is none) and `recurrent_kimi_delta_attention` for a cached one-token decode step;
both are fla kernels when fla is installed, PyTorch otherwise. The dispatcher, as for GDN:

  * injects `initial_state` only when the chunk kernel starts a fresh sequence (initial_state is None), so a
    multi-token segment continuing a cache keeps the cache's state and S0 enters once, before the first token;
  * makes pads the identity: g = 0 (all channels: no decay) and beta = 0 (no erase, no write) at padded steps;
  * adds the state-offset readout q_t^T dS to every step's output (prefill and decode), before the gated norm.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from s0.adapters.kinds.common import Kind, current_call, resolve
from s0.adapters.kinds.gdn import with_state  # same q preprocessing (L2 norm, K^-1/2), same (H, K, V) state

MODULES = ("transformers.models.kimi_linear.modeling_kimi_linear",)
CHUNK, RECURRENT = "chunk_kimi_delta_attention", "recurrent_kimi_delta_attention"
# transformers' PyTorch signatures after (query, key, value); the mixer passes these by keyword.
POSITIONAL = {
    CHUNK: ("g", "beta", "chunk_size", "initial_state", "output_final_state"),
    RECURRENT: ("g", "beta", "initial_state", "output_final_state"),
}


def dispatch(name: str, orig: Callable) -> Callable:
    """Dispatcher for both KDA kernels; only the chunk kernel starts fresh sequences."""
    fresh_capable = name == CHUNK

    @functools.wraps(orig)
    def run(query, key, value, *args, **kwargs):
        call = current_call()
        if call is None:
            return resolve(name, "gdn", orig, query, key, value, kwargs.get("initial_state"))(
                query, key, value, *args, **kwargs
            )
        kwargs.update(zip(POSITIONAL[name], args))
        # g (B, T, H, K) per-channel log-decay, beta (B, T, H): the GDN call with a finer decay
        return with_state(name, orig, call, fresh_capable, query, key, value, kwargs)

    run._s0_original = orig
    return run


def state_shape(module: nn.Module) -> tuple[int, int, int] | None:
    """(heads, key dim, value dim); KDA's key and value heads have the same dim (linear_head_dim)."""
    if type(module).__module__ in MODULES and hasattr(module, "forget_gate"):
        return (module.num_heads, module.head_dim, module.head_dim)
    return None


KIND = Kind(
    name="kda",
    family="gdn",  # routing family: the same package (fla) and the same backend.gdn route as GatedDeltaNet
    dispatchers={CHUNK: dispatch, RECURRENT: dispatch},
    modules=MODULES,
    state_shape=state_shape,
    kernel_note="KDA: the chunk kernel's initial_state argument (fla or PyTorch)",
)
