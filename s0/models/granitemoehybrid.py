"""Granite 4.0 hybrid (transformers `granitemoehybrid`, issue 15): Mamba-2 and attention layers, MoE or dense MLPs."""

from s0.models import bamba
from s0.models.family import Family

FAMILY = Family(
    name="granitemoehybrid",
    config_class="GraniteMoeHybridConfig",
    model_class="GraniteMoeHybridForCausalLM",
    kind="mamba2",
    # [Mamba-2, attention, Mamba-2] with bamba.TINY_LAYERS' state and chunk; no routed experts (the shared MLP only,
    # as the dense Granite 4.0 H models)
    tiny_arch=dict(
        **bamba.TINY_LAYERS,
        shared_intermediate_size=64,
        num_local_experts=0,
        num_hidden_layers=3,
        layer_types=["mamba", "attention", "mamba"],
    ),
)
