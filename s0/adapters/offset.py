"""State-offset tuning (paper Sec 5.5, after Kang et al. 2025): a learned per-layer offset dS read at every step.

The recurrence itself is unchanged (S_t evolves from the zero state as in the base model); each step's readout
uses S_t + dS instead of S_t:

    GatedDeltaNet  o_t = (S_t + dS)^T q_t            q_t l2-normalised and scaled by K^-1/2, as the kernel does
    Mamba-2        y_t = (S_t + dS) C_t + D x_t      before the output gate, as in the kernel

so it costs one extra contraction per layer per generated token, unlike S0. Same training loop, save format,
alpha semantics and layer selection as S0 (it shares `StateAdapter`); the paper evaluates it on Qwen3.5 only,
the Mamba-2 form is provided for completeness.
"""

from __future__ import annotations

import dataclasses

from s0.adapters.injection import LayerInjection
from s0.adapters.kinds import RecurrentLayer
from s0.adapters.state import S0Config, StateAdapter


@dataclasses.dataclass
class StateOffsetConfig(S0Config):
    """Same fields as S0Config (alpha scales dS with the same three modes)."""


class StateOffsetAdapter(StateAdapter):
    method = "state_offset"
    config_cls = StateOffsetConfig
    param_prefix = "offset"

    def _injection(self, layer: RecurrentLayer) -> LayerInjection:
        return LayerInjection(
            layer.kind, readout_offset=lambda i=layer.index: self.injected(i), fix_padding=self.fix_padding
        )
