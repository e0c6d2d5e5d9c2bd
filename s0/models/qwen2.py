"""Qwen2 (Qwen2.5-3B-Instruct, paper Sec 5.8): a pure Transformer, the control with no recurrent state."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="qwen2",
    config_class="Qwen2Config",
    model_class="Qwen2ForCausalLM",
    kind=None,
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        max_position_embeddings=4096,
    ),
)
