"""Qwen3.5 (the paper's main model, Sec 4.1): GatedDeltaNet layers and attention, [GDN, GDN, GDN, attention] repeated.

Hub checkpoints are the multimodal Qwen3_5ForConditionalGeneration: the text weights sit under
`model.language_model.*` (mapped by s0.models.build.load_checkpoint), the vision tower and the multi-token
prediction head are dropped and listed.
"""

from s0.models.family import TINY_VOCAB, Family

# The tiny GatedDeltaNet and attention layer shapes, shared by the families that reuse Qwen3.5's mixer (qwen3_next,
# qwen3_5_moe, lara_mini): state 4 value heads x key dim 16 x value dim 8. Key and value dims differ on purpose, so a
# transposed state cannot pass a shape check by accident.
TINY_LAYERS = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=64,
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
)

FAMILY = Family(
    name="qwen3_5",
    config_class="Qwen3_5TextConfig",
    model_class="Qwen3_5ForCausalLM",
    kind="gdn",
    tiny_arch=dict(
        **TINY_LAYERS,
        intermediate_size=128,
        num_hidden_layers=8,  # 6 GDN + 2 attention, [GDN, GDN, GDN, attn] x 2, so layer groups can be ablated
    ),
    ignored_prefixes={
        "model.visual.": "vision tower (the harness builds the text-only causal LM)",
        "mtp.": "multi-token-prediction head (unused by generation)",
    },
)
