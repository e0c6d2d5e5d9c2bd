"""FalconH1 (the paper's second model): attention and Mamba-2 heads side by side in every layer."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="falcon_h1",
    config_class="FalconH1Config",
    model_class="FalconH1ForCausalLM",
    kind="mamba2",
    # Head dim and d_state differ (8 vs 16); the chunk size (8) is smaller than a prompt, so the chunked scan
    # crosses chunk boundaries.
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        mamba_d_ssm=32,
        mamba_n_heads=4,
        mamba_d_head=8,
        mamba_d_state=16,
        mamba_n_groups=1,
        mamba_chunk_size=8,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    ),
)
