"""Zamba2 (Zyphra, issue 15): a Mamba-2 mixer in every layer; "hybrid" layers also run a shared attention block."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="zamba2",
    config_class="Zamba2Config",
    model_class="Zamba2ForCausalLM",
    kind="mamba2",
    # [Mamba-2, hybrid, Mamba-2, hybrid]: 4 Mamba-2 mixers, state 4 heads x head dim 16 (2 x hidden / heads) x d_state 8;
    # chunk 8
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        layers_block_type=["mamba", "hybrid", "mamba", "hybrid"],
        num_attention_heads=2,
        num_key_value_heads=2,
        n_mamba_heads=4,
        mamba_d_state=8,
        mamba_ngroups=1,
        chunk_size=8,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    ),
)
