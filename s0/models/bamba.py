"""Bamba (IBM, issue 15): Mamba-2 layers with a few attention layers between them."""

from s0.models.family import TINY_VOCAB, Family

# The tiny Mamba-2 and attention layer shapes, in the config field names Granite 4.0 hybrid shares with Bamba.
TINY_LAYERS = dict(
    vocab_size=TINY_VOCAB,
    hidden_size=32,
    intermediate_size=64,
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
)

FAMILY = Family(
    name="bamba",
    config_class="BambaConfig",
    model_class="BambaForCausalLM",
    kind="mamba2",
    # [Mamba-2, attention, Mamba-2]; state 4 heads x head dim 16 x d_state 8 (unequal, so a transposed state fails a
    # shape check); chunk 8, smaller than a prompt; token ids inside the tiny vocab
    tiny_arch=dict(**TINY_LAYERS, num_hidden_layers=3, attn_layer_indices=[1]),
)
