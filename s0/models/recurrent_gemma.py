"""RecurrentGemma (issue 15): RG-LRU blocks (a diagonal vector state) and local attention, in a repeating pattern."""

from s0.models.family import TINY_VOCAB, Family

FAMILY = Family(
    name="recurrent_gemma",
    config_class="RecurrentGemmaConfig",
    model_class="RecurrentGemmaForCausalLM",
    kind="rglru",
    # [recurrent, recurrent, attention]; state (lru_width,) = (32,) per recurrent layer, lru_width = hidden_size
    # (transformers sizes the conv cache by hidden_size); 2 gate blocks of 16
    tiny_arch=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=96,
        num_hidden_layers=3,
        block_types=["recurrent", "recurrent", "attention"],
        num_attention_heads=2,
        num_key_value_heads=1,
        attention_window_size=64,
        conv1d_width=4,
        pad_token_id=257,  # the tiny tokenizer's pad id: its embedding row starts at zero (padding_idx)
        eos_token_id=256,
        bos_token_id=None,
        tie_word_embeddings=True,
    ),
)
