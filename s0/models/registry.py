"""The model families: one file each in s0/models/, one line each below (the order is the listing order)."""

from __future__ import annotations

from typing import Any

from s0.models import (
    bamba,
    falcon_h1,
    falcon_mamba,
    granitemoehybrid,
    jamba,
    kimi_linear,
    lara_mini,
    mamba,
    mamba2,
    nemotron_h,
    qwen2,
    qwen3_5,
    qwen3_5_moe,
    qwen3_next,
    recurrent_gemma,
    zamba2,
)
from s0.models.family import Family

FAMILIES: dict[str, Family] = {
    module.FAMILY.name: module.FAMILY
    for module in (
        qwen3_5,
        falcon_h1,
        qwen2,
        mamba,
        falcon_mamba,
        recurrent_gemma,
        kimi_linear,
        qwen3_next,
        bamba,
        granitemoehybrid,
        nemotron_h,
        zamba2,
        mamba2,
        jamba,
        qwen3_5_moe,
        lara_mini,
    )
}

# Tiny architectures for tests and the CPU demo, by family (families without one are absent).
TINY_ARCH: dict[str, dict[str, Any]] = {
    name: family.tiny_arch for name, family in FAMILIES.items() if family.tiny_arch is not None
}
