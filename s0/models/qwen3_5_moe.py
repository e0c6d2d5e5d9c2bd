"""Qwen3.5 MoE (Qwen3.5-35B-A3B and larger, issue 15): Qwen3.5's GatedDeltaNet and attention layers, every MLP a
routed mixture of experts with a shared expert. The GDN mixer is Qwen3.5's, so the gdn kind applies as is.

Hub checkpoints are multimodal like Qwen3.5's: the same text-prefix mapping, the same dropped vision and mtp weights.
"""

from s0.models import qwen3_5
from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="qwen3_5_moe",
    config_class="Qwen3_5MoeTextConfig",
    model_class="Qwen3_5MoeForCausalLM",
    kind="gdn",
    # 3 GDN (state 4 value heads x 16 x 8, as tiny qwen3_5) + 1 attention layer; 2 experts, 1 routed per token. Every
    # layer is MoE, whose grouped matmul refuses float64: its tests run in float32.
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        num_hidden_layers=4,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        num_experts=2,
        num_experts_per_tok=1,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=16,
        linear_value_head_dim=8,
        linear_conv_kernel_dim=4,
        eos_token_id=None,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    ),
    ignored_prefixes=qwen3_5.FAMILY.ignored_prefixes,
)
