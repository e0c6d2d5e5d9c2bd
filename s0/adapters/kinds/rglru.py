"""RG-LRU (transformers `recurrent_gemma`, Griffin/Hawk): a diagonal vector state, one (lru_width,) vector per layer.

Per channel, with recurrent gate r_t, input gate i_t (sigmoids of block-diagonal projections of x_t) and
a_t = exp(-8 r_t softplus(recurrent_param)) in (0, 1):

    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)        (every step but a reset)
    h_r = i_r * x_r                                               (a reset: position_ids == 0)

transformers' RecurrentGemmaRglru.forward computes a_t, the normalised input and `reset = position_ids == 0`,
then calls its own PyTorch scan `_rnn_scan`, which multiplies a_t by ~reset: at a reset the incoming state is
dropped and the input is not normalised. There is no kernel function to wrap, the state lives on the module
(`rg_lru.recurrent_states`, float32), not in the Cache, and the block's forward names its input `input_states`
and keeps no layer_idx. So this file patches, once and only on the transformers classes it recognises:

  * RecurrentGemmaRecurrentBlock.forward: the same code under a signature the adapter's hooks read
    (hidden_states, ..., attention_mask, cache); when the cache already holds tokens (a decode step or a later
    segment) it keeps S0 out, and an S0-only layer runs the base code with nothing active (the cache's
    has_previous_state never turns True for these layers, so the generic pre-hook cannot skip them);
  * RecurrentGemmaRglru._rnn_scan: with an adapter active, at every reset step it adds a_r * S0 to the scan's
    input. The scan zeroes a_r there, so h_r = a_r * S0 + i_r * x_r: S0 is the state before the first token
    and takes the first recurrence step's decay. With S0 = 0 this is the base model exactly.
    # assumption: S0 enters with the reset step's decay a_r and the reset keeps transformers' unnormalised
    # input (multiplier 1); the paper defines S0 for GDN and Mamba-2 only (Sec 3).
  * state-offset: the layer reads h_t + dS at every step (prefill and decode); the recurrence does not see dS.

Padding follows transformers: a sequence starts where position_ids == 0. `generate` gives left pads position 0
and the first real token position 0, so every pad is a reset and the first real token resets again: S0 enters
there and the pads never reach it. A plain forward with an attention mask but no position_ids counts positions
from column 0 (transformers itself is then pad-dependent); pass the mask's cumsum as position_ids.
`LayerInjection.fix_padding` has no effect here. S0 is the recurrent state only: the depthwise conv1d state
(last conv1d_width - 1 inputs) starts from zeros as transformers' prefill does, and is not tuned.
A second multi-token segment into a cache continues from the module's state without a reset: S0 is not added
again (it enters only at resets).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from torch import nn

from s0.adapters.kinds.common import CURRENT, Call, Kind, current_call

MODULE = "transformers.models.recurrent_gemma.modeling_recurrent_gemma"


def scan_with_state(orig_scan):
    """Wrap RecurrentGemmaRglru._rnn_scan (hidden_states is the normalised gated input, recurrent_gate a_t)."""

    @functools.wraps(orig_scan)
    def _rnn_scan(self, hidden_states, recurrent_gate, reset, recurrent_states, acc_dtype=torch.float32):
        call = current_call()
        if call is None:
            return orig_scan(self, hidden_states, recurrent_gate, reset, recurrent_states, acc_dtype)
        if call.inj.initial_state is not None:
            s0 = call.inj.initial_state()  # (lru_width,)
            work = torch.promote_types(recurrent_gate.dtype, s0.dtype)
            # reset (B, T, 1): h_r = a_r S0 + x_r once the scan has zeroed a_r (the state is dropped there).
            # The sum is rounded to the input's dtype, as the scan rounds its input.
            entry = torch.where(reset, recurrent_gate.to(work) * s0.to(work), torch.zeros((), dtype=work))
            hidden_states = (hidden_states.to(work) + entry).to(hidden_states.dtype)
        out, last = orig_scan(self, hidden_states, recurrent_gate, reset, recurrent_states, acc_dtype)
        if call.inj.readout_offset is not None:
            out = out + call.inj.readout_offset().to(out.dtype)
        return out, last

    _rnn_scan._s0_original = orig_scan
    return _rnn_scan


def block_with_hook_signature(orig_forward):
    """Wrap RecurrentGemmaRecurrentBlock.forward: same code, named arguments the adapter's pre-hook reads."""

    # No functools.wraps: inspect.signature would follow __wrapped__ back to `input_states`.
    def forward(self, hidden_states, position_ids, attention_mask, use_cache=True, cache=None, **kwargs: Any):
        call = current_call()
        token = None
        # A cache holding past tokens means this call continues a sequence: transformers' own position ids then
        # do not start at 0, so there is no reset and S0 has nothing to enter. An S0-only layer runs the base
        # code with nothing active (a one-token decode step executes exactly the base ops); a layer with a
        # readout offset keeps reading it.
        if (
            call is not None
            and call.inj.initial_state is not None
            and cache is not None
            and cache.get_seq_length() > 0
        ):
            rest = dataclasses.replace(call.inj, initial_state=None)
            token = CURRENT.set(None if rest.readout_offset is None else Call(rest, call.mask, False))
        try:
            return orig_forward(
                self, hidden_states, position_ids, attention_mask, use_cache=use_cache, cache=cache, **kwargs
            )
        finally:
            if token is not None:
                CURRENT.reset(token)

    forward._s0_original = orig_forward
    return forward


def patch(block_cls: type, lru_cls: type) -> None:
    """Install both wrappers on the transformers classes; idempotent. Without an active adapter they run the
    original code with the original arguments."""
    if not hasattr(block_cls.forward, "_s0_original"):
        block_cls.forward = block_with_hook_signature(block_cls.forward)
    if not hasattr(lru_cls._rnn_scan, "_s0_original"):
        lru_cls._rnn_scan = scan_with_state(lru_cls._rnn_scan)


def state_shape(module: nn.Module) -> tuple[int] | None:
    """(lru_width,) for a RecurrentGemma recurrent block. Found by the walk from the model down: at the
    RecurrentGemmaModel it numbers the blocks (transformers keeps no layer_idx on them; the cache index is the
    decoder layer's) and patches their classes, so the blocks that follow are recognised."""
    name = type(module).__name__
    if name == "RecurrentGemmaModel":
        for i, layer in enumerate(module.layers):
            block = layer.temporal_block
            if hasattr(block, "rg_lru"):
                block.layer_idx = i
                patch(type(block), type(block.rg_lru))
        return None
    if name == "RecurrentGemmaRecurrentBlock" and hasattr(module, "layer_idx"):
        return (module.lru_width,)
    return None


KIND = Kind(
    name="rglru",
    family="rglru",  # no kernel to route: transformers' PyTorch scan always runs
    dispatchers={},
    modules=(MODULE,),
    state_shape=state_shape,
    kernel_note=(
        "RG-LRU: transformers' PyTorch scan (no kernel, no initial-state argument); S0 enters as a_r * S0 added "
        "to the scan input at each reset step (position_ids == 0), recurrent state only (conv1d state not tuned)"
    ),
)
