"""Mamba (Mamba-1, issue 15): a selective-scan mixer with a diagonal state in every layer."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="mamba",
    config_class="MambaConfig",
    model_class="MambaForCausalLM",
    kind="mamba1",
    # d_inner = expand * hidden = 64 channels, d_state 8 (unequal, so a transposed state fails a shape check)
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        state_size=8,
        num_hidden_layers=3,
        expand=2,
        conv_kernel=4,
        time_step_rank=4,
        tie_word_embeddings=True,
    ),
)
