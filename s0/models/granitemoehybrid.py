"""Granite 4.0 hybrid (transformers `granitemoehybrid`, issue 15): Mamba-2 and attention layers, MoE or dense MLPs."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="granitemoehybrid",
    config_class="GraniteMoeHybridConfig",
    model_class="GraniteMoeHybridForCausalLM",
    kind="mamba2",
    # [Mamba-2, attention, Mamba-2]; state 4 heads x 16 x 8; chunk 8; no routed experts (the shared MLP only, as the
    # dense Granite 4.0 H models)
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        shared_intermediate_size=64,
        num_local_experts=0,
        num_hidden_layers=3,
        layer_types=["mamba", "attention", "mamba"],
        num_attention_heads=2,
        num_key_value_heads=1,
        mamba_n_heads=4,
        mamba_d_head=16,  # x 4 heads = mamba_expand x hidden_size = 64
        mamba_d_state=8,
        mamba_n_groups=1,
        mamba_expand=2,
        mamba_chunk_size=8,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    ),
)
