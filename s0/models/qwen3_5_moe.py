"""Qwen3.5 MoE (Qwen3.5-35B-A3B and larger, issue 15): Qwen3.5's GatedDeltaNet and attention layers, every MLP a
routed mixture of experts with a shared expert. The GDN mixer is Qwen3.5's, so the gdn kind applies as is.

Hub checkpoints are multimodal like Qwen3.5's: the same text-prefix mapping, the same dropped vision and mtp weights.
"""

from s0.models import qwen3_5
from s0.models.family import Family

FAMILY = Family(
    name="qwen3_5_moe",
    config_class="Qwen3_5MoeTextConfig",
    model_class="Qwen3_5MoeForCausalLM",
    kind="gdn",
    # 3 GDN (qwen3_5.TINY_LAYERS' state) + 1 attention layer; 2 experts, 1 routed per token. Every
    # layer is MoE, whose grouped matmul refuses float64: its tests run in float32.
    tiny_arch=dict(
        **qwen3_5.TINY_LAYERS,
        num_hidden_layers=4,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        eos_token_id=None,
    ),
    ignored_prefixes=qwen3_5.FAMILY.ignored_prefixes,
)
