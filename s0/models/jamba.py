"""Jamba (AI21, issue 15): Mamba-1 layers (diagonal state) with one attention layer in every `attn_layer_period`."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="jamba",
    config_class="JambaConfig",
    model_class="JambaForCausalLM",
    kind="mamba1",
    # [Mamba-1, Mamba-1, attention, Mamba-1]; state (d_inner, d_state) = (64, 8); one expert, i.e. dense MLPs (the
    # MoE's grouped matmul refuses float64)
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        attn_layer_period=4,
        attn_layer_offset=2,
        num_experts=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        mamba_d_state=8,
        mamba_expand=2,
        mamba_dt_rank=4,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    ),
)
