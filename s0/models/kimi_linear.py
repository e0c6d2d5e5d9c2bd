"""Kimi Linear (issue 15): Kimi Delta Attention layers (a matrix state per head, per-channel decay) and MLA attention."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="kimi_linear",
    config_class="KimiLinearConfig",
    model_class="KimiLinearForCausalLM",
    kind="kda",
    # 3 KDA layers (state 2 heads x 16 x 16) + 1 MLA attention layer; dense MLPs only (the MoE's grouped matmul
    # refuses float64); token ids inside the tiny vocab (the defaults are Kimi's 163k ids)
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention"],
        mlp_layer_types=["dense"] * 4,
        num_attention_heads=2,
        num_key_value_heads=2,
        kv_lora_rank=16,
        q_lora_rank=None,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
        linear_num_heads=2,
        linear_head_dim=16,
        linear_conv_kernel_dim=4,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    ),
)
