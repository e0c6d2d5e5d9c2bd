"""Qwen3-Next (issue 15): GatedDeltaNet layers and gated attention, [GDN, GDN, GDN, attention] repeated, sparse MoE.

Its GDN mixer projects q, k, v, z in one interleaved matrix (in_proj_qkvz) and b, a in another (in_proj_ba), but
calls the same kernels as Qwen3.5's, with the same (value heads, key dim, value dim) state: the gdn kind as is.
"""

from s0.models import qwen3_5
from s0.models.family import Family

FAMILY = Family(
    name="qwen3_next",
    config_class="Qwen3NextConfig",
    model_class="Qwen3NextForCausalLM",
    kind="gdn",
    # 3 GDN (qwen3_5.TINY_LAYERS' state) + 1 attention layer; dense MLPs only (the MoE's grouped
    # matmul refuses float64)
    tiny_arch=dict(
        **qwen3_5.TINY_LAYERS,
        intermediate_size=128,
        num_hidden_layers=4,
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        mlp_only_layers=[0, 1, 2, 3],
    ),
)
