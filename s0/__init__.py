"""S0 tuning: learned initial recurrent states for hybrid recurrent-attention models.

The library entry points (`from s0 import S0Config, S0Model, get_s0_model`, see s0/api.py) are imported on first
use, so `import s0` stays free of torch and transformers for the command-line tools.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = ("S0Config", "S0Model", "get_s0_model", "supported_kinds")


def __getattr__(name: str) -> Any:
    if name in _API:
        # imported by name at call time: the package itself does not import its submodules
        return getattr(importlib.import_module("s0.api"), name)
    raise AttributeError(f"module 's0' has no attribute '{name}'")


__all__ = ["S0Config", "S0Model", "__version__", "get_s0_model", "supported_kinds"]
