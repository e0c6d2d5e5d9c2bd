"""Nemotron-H (NVIDIA, issue 15): one block per layer, Mamba-2, MLP or attention, in a pattern string."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="nemotron_h",
    config_class="NemotronHConfig",
    model_class="NemotronHForCausalLM",
    kind="mamba2",
    # [Mamba-2, MLP, attention, Mamba-2, MLP]; state 4 heads x 16 x 8; 2 groups of B, C (the real models use 8), so
    # the group-to-head expansion is exercised; chunk 8
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        layers_block_type=["mamba", "mlp", "attention", "mamba", "mlp"],
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        mamba_num_heads=4,
        mamba_head_dim=16,
        ssm_state_size=8,
        n_groups=2,
        chunk_size=8,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    ),
)
