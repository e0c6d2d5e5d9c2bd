"""Lara Mini (transformers `lara_mini`, issue 15): GatedDeltaNet layers (Qwen3.5's mixer layout) between sliding-window
and full attention layers, every MLP a routed mixture of experts."""

from s0.models import qwen3_5
from s0.models.family import Family

FAMILY = Family(
    name="lara_mini",
    config_class="LaraMiniConfig",
    model_class="LaraMiniForCausalLM",
    kind="gdn",
    # [GDN, sliding attention, GDN, full attention]: 2 GDN layers (qwen3_5.TINY_LAYERS' state); 2 experts, 1 routed.
    # Every layer is MoE, whose grouped matmul refuses float64: its tests run in float32.
    tiny_arch=dict(
        **qwen3_5.TINY_LAYERS,
        num_hidden_layers=4,
        layer_types=["linear_attention", "sliding_attention", "linear_attention", "full_attention"],
        sliding_window=64,
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        eos_token_id=None,
    ),
)
