"""Mamba-2 (transformers `mamba2`, issue 15): a pure SSD model, a Mamba-2 mixer in every layer and no attention."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="mamba2",
    config_class="Mamba2Config",
    model_class="Mamba2ForCausalLM",
    kind="mamba2",
    # 2 layers, state 4 heads x head dim 16 x d_state 8 (heads x head dim = expand x hidden = 64); chunk 8
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_heads=4,
        head_dim=16,
        expand=2,
        state_size=8,
        n_groups=1,
        chunk_size=8,
        time_step_rank=4,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
    ),
)
