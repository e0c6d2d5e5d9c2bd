"""Lara Mini (transformers `lara_mini`, issue 15): GatedDeltaNet layers (Qwen3.5's mixer layout) between sliding-window
and full attention layers, every MLP a routed mixture of experts."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="lara_mini",
    config_class="LaraMiniConfig",
    model_class="LaraMiniForCausalLM",
    kind="gdn",
    # [GDN, sliding attention, GDN, full attention]: 2 GDN layers, state 4 value heads x 16 x 8; 2 experts, 1 routed.
    # Every layer is MoE, whose grouped matmul refuses float64: its tests run in float32.
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        num_hidden_layers=4,
        layer_types=["linear_attention", "sliding_attention", "linear_attention", "full_attention"],
        sliding_window=64,
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
)
