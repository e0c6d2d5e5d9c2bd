"""The model families: one file each in s0/models/, one line each below (the order is the listing order)."""

from __future__ import annotations

from typing import Any

from s0.models import falcon_h1, falcon_mamba, kimi_linear, mamba, qwen2, qwen3_5, recurrent_gemma
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
    )
}

# Tiny architectures for tests and the CPU demo, by family (families without one are absent).
TINY_ARCH: dict[str, dict[str, Any]] = {
    name: family.tiny_arch for name, family in FAMILIES.items() if family.tiny_arch is not None
}
