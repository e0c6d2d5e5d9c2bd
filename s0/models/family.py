"""What a model family file declares: `FAMILY = Family(...)`, one per file in s0/models/ (qwen3_5.py, ...).

A family is a transformers causal-LM class pair, the recurrence kind of its recurrent mixers, a tiny architecture
built from those real classes for tests and the CPU demo, and what its hub checkpoints hold beyond the causal LM.
Adding a family is its file plus one line in s0/models/registry.py. This module imports nothing of s0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Every tiny architecture uses the offline byte-level tokenizer's vocabulary (s0.models.build.tiny_tokenizer).
TINY_VOCAB = 272


@dataclass(frozen=True)
class Family:
    """One transformers model family, as the builder and the tests need it."""

    name: str  # `family:` in conf/model/*.yaml
    config_class: str  # transformers class names: tiny models use the real classes with small configs
    model_class: str
    # The recurrence kind of its recurrent mixers (a key of s0.adapters.kinds.KINDS; tests check the tiny model
    # is detected as exactly this); None: a pure Transformer, no state to tune.
    kind: str | None
    tiny_arch: dict[str, Any] | None  # the config fields of the tiny model; None: the family has none
    # Checkpoint key prefix -> why the text-only causal LM drops it: listed in the load report, never silently
    # skipped (anything else the model does not take is refused).
    ignored_prefixes: dict[str, str] = field(default_factory=dict)
