"""Adapters behind one interface: S0 and state-offset (ours), LoRA and prefix tuning (thin wrappers around peft).

from s0.adapters import build_adapter, load_adapter
adapter = build_adapter("s0", model, alpha=0.07)       # or "state_offset", "lora", "prefix", "baseline"
with adapter.active():
    adapter.model.generate(...)
adapter.save(run_dir / "adapter", extra_meta={"train": ..., "data_hash": ...})
again = load_adapter(run_dir / "adapter", fresh_model)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from s0.adapters.base import CONFIG_FILE, META_FILE, Adapter, AdapterError, NullAdapter, read_json
from s0.adapters.offset import StateOffsetAdapter, StateOffsetConfig
from s0.adapters.peft_methods import LoraAdapter, LoraAdapterConfig, PrefixAdapter, PrefixAdapterConfig
from s0.adapters.state import DEFAULT_ALPHA_MODE, S0Adapter, S0Config, StateAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "baseline": NullAdapter,
    "s0": S0Adapter,
    "state_offset": StateOffsetAdapter,
    "lora": LoraAdapter,
    "prefix": PrefixAdapter,
}
# Training-loop and runner fields of s0.run.config.MethodConfig that are not adapter fields: accepted and ignored,
# so the runner can pass a whole method config.
_LOOP_FIELDS = {
    "name", "lr", "steps", "l2", "grad_clip", "batching", "micro_batch_size", "max_tokens", "max_train_examples", "merge",
}  # fmt: skip


def _config_fields(cls: type[Adapter]) -> set[str]:
    cfg = getattr(cls, "config_cls", None)
    return {f.name for f in dataclasses.fields(cfg)} if cfg is not None else set()


def build_adapter(method: str, model: nn.Module, **fields: Any) -> Adapter:
    """A fresh adapter of `method` on `model`. Fields of other methods and of the training loop are ignored;
    a field no method knows raises (typos must not pass silently)."""
    if method not in ADAPTERS:
        raise AdapterError(f"unknown method '{method}'; known: {', '.join(ADAPTERS)}")
    cls = ADAPTERS[method]
    every = set().union(*(_config_fields(c) for c in ADAPTERS.values())) | _LOOP_FIELDS
    unknown = sorted(set(fields) - every - {"seed", "target_modules"})
    if unknown:
        raise AdapterError(f"build_adapter('{method}'): unknown field(s) {', '.join(unknown)}")
    if cls is NullAdapter:
        return NullAdapter(model)
    mine = _config_fields(cls) | ({"seed"} if cls in (LoraAdapter, PrefixAdapter) else set())
    return cls(model, **{k: v for k, v in fields.items() if k in mine})


def load_adapter(path: str | Path, model: nn.Module, **kwargs: Any) -> Adapter:
    """Load any saved adapter into `model`, dispatching on its sidecar."""
    d = Path(path)
    meta = read_json(d / META_FILE) if (d / META_FILE).exists() else read_json(d / CONFIG_FILE)
    method = meta.get("s0_method")
    if method not in ADAPTERS:
        raise AdapterError(f"{d}: cannot tell which method saved it (s0_method={method!r})")
    return ADAPTERS[method].load(d, model, **kwargs)


__all__ = [
    "DEFAULT_ALPHA_MODE",
    "Adapter",
    "AdapterError",
    "LoraAdapter",
    "LoraAdapterConfig",
    "NullAdapter",
    "PrefixAdapter",
    "PrefixAdapterConfig",
    "S0Adapter",
    "S0Config",
    "StateAdapter",
    "StateOffsetAdapter",
    "StateOffsetConfig",
    "build_adapter",
    "load_adapter",
]
