"""`make state-counts`: what S0 learns in each model of conf/model/, built on the meta device (no weights, seconds).

    python scripts/state_counts.py                          # every model entry
    python scripts/state_counts.py qwen3_5_4b mamba_2_8b    # those named

One row per model: its recurrence kind, recurrent layers, the state shape and entries per layer, the S0
parameters in all (one state per recurrent layer) and their share of the model. A pure Transformer shows 0.
An unknown name ends in one line (exit 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from s0.adapters.kinds import StateCount, state_count  # noqa: E402
from s0.models import ModelError  # noqa: E402

MODELS = ROOT / "conf" / "model"
HEADER = ("model", "family", "kind", "layers", "state/layer", "entries/layer", "S0 total", "share")


def entry(name: str) -> dict[str, Any]:
    """conf/model/<name>.yaml as a plain dict."""
    import yaml

    path = MODELS / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in MODELS.glob("*.yaml")))
        raise ModelError(f"no model entry '{name}' in conf/model/; known: {known}")
    return yaml.safe_load(path.read_text())


def count(name: str) -> StateCount:
    """S0's size for the model entry `name` (a tiny entry's `arch: {}` means its TINY_ARCH)."""
    cfg = entry(name)
    return state_count(cfg["family"], cfg.get("arch") or None)


def size(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"


def row(name: str, family: str, c: StateCount) -> tuple[str, ...]:
    shapes = ", ".join("x".join(map(str, s)) for s in c.shapes) or "-"
    return (
        name,
        family,
        ", ".join(c.kinds) or "none",
        str(c.n_layers),
        shapes,
        ", ".join(f"{n:,}" for n in c.per_layer) or "0",
        f"{c.total:,}",
        f"{100 * c.total / c.model_params:.2f}% of {size(c.model_params)}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="conf/model names (default: every entry)")
    args = parser.parse_args(argv)
    names = args.names or sorted(p.stem for p in MODELS.glob("*.yaml"))
    try:
        rows = [HEADER] + [row(n, entry(n)["family"], count(n)) for n in names]
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    for r in rows:
        print(
            "  ".join(
                cell.rjust(w) if i >= 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
