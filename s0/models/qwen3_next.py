"""Qwen3-Next (issue 15): GatedDeltaNet layers and gated attention, [GDN, GDN, GDN, attention] repeated, sparse MoE.

Its GDN mixer projects q, k, v, z in one interleaved matrix (in_proj_qkvz) and b, a in another (in_proj_ba), but
calls the same kernels as Qwen3.5's, with the same (value heads, key dim, value dim) state: the gdn kind as is.
"""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="qwen3_next",
    config_class="Qwen3NextConfig",
    model_class="Qwen3NextForCausalLM",
    kind="gdn",
    # 3 GDN (state 4 value heads x 16 x 8, as tiny qwen3_5) + 1 attention layer; dense MLPs only (the MoE's grouped
    # matmul refuses float64)
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        mlp_only_layers=[0, 1, 2, 3],
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=16,
        linear_value_head_dim=8,
        linear_conv_kernel_dim=4,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    ),
)
