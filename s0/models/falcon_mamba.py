"""FalconMamba (issue 15): Mamba-1 with RMS-normed B, C and dt before the scan, in every layer.

It has no tiny architecture of its own: its conf entry points to tiny_mamba (the mamba1 kind's tiny model), and
tests/test_kind_mamba1.py runs a tiny FalconMamba from transformers' class directly.
"""

from s0.models.family import Family

FAMILY = Family(
    name="falcon_mamba",
    config_class="FalconMambaConfig",
    model_class="FalconMambaForCausalLM",
    kind="mamba1",
    tiny_arch=None,
)
