"""The state-expressiveness experiment (issue 15; paper Sec 2 and Sec 8): S0 vs rank-matched LoRA per recurrence
kind. One row per model in the `expressiveness` records, read from the tidy records alone: pass@1 per arm,
the trainable counts each run recorded (`trainable_params`), the LoRA rank (`r` column) and the model family.
The paper states the hypothesis but tests only two matrix-state families, so no cell has a paper value.

    rows = expressiveness_rows(res.metrics)     # also drawn by s0.report.figures.fig_expressiveness
    table = table_expressiveness(res)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from s0 import stats
from s0.models import FAMILIES, TINY_ARCH, n_recurrent_layers
from s0.report.table_core import Cell, Table, data_cell, derived_cell, gap_se, p_cell, with_protocol
from s0.run.lookup import select
from s0.run.records import Results

EXPERIMENT = "expressiveness"
MODEL_CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
# recurrence kind (s0.adapters.kinds.KINDS, a family's `kind` in s0.models.FAMILIES) -> (its name in the table,
# state structure); issue 15's table. A records' `family` reaches it through the registry, so a new family of a
# known kind needs no line here.
KIND_LABEL: dict[str, tuple[str, str]] = {
    "gdn": ("GatedDeltaNet", "matrix"),
    "kda": ("Kimi Delta Attention", "matrix"),
    "mamba2": ("Mamba-2", "matrix"),
    "mamba1": ("Mamba-1", "diagonal"),
    "rglru": ("RG-LRU", "diagonal"),
}
HYPOTHESIS = (
    "Hypothesis (paper Sec 2, Sec 8; untested there): S0 works when the recurrent state is matrix-valued "
    "(GatedDeltaNet, Mamba-2) and fails below a state-expressiveness threshold (diagonal Mamba-1), so S0 − LoRA "
    "should be larger for matrix states than for diagonal ones."
)
NO_PAPER = "The paper reports no numbers for this experiment: every cell is ours, none is judged."


def kind_label(family: str) -> tuple[str, str]:
    """(kind name, state structure) of a family; (family, "?") for one the registry does not know or a pure
    Transformer."""
    kind = FAMILIES[family].kind if family in FAMILIES else None
    return KIND_LABEL.get(kind, (family, "?"))


def model_arch(model: str, family: str) -> dict[str, Any] | None:
    """The model's architecture fields: conf/model/<model>.yaml's arch, TINY_ARCH for a tiny model; None if
    neither exists (then the per-layer count is shown as missing, never guessed)."""
    path = MODEL_CONF / f"{model}.yaml"
    if not path.exists():
        return None
    return (yaml.safe_load(path.read_text()) or {}).get("arch") or TINY_ARCH.get(family)


@dataclass
class ModelGap:
    """One model's row: its arms' per-seed frames (`select` rows) and what the records say about it."""

    model: str
    family: str
    base: pd.DataFrame
    s0: pd.DataFrame
    lora: pd.DataFrame
    s0_params: float | None
    lora_params: float | None
    lora_r: int | None
    state_layers: int | None

    @property
    def kind(self) -> str:
        return kind_label(self.family)[0]

    @property
    def structure(self) -> str:
        return kind_label(self.family)[1]

    @property
    def entries_per_layer(self) -> float | None:
        if not self.s0_params or not self.state_layers:
            return None
        return self.s0_params / self.state_layers

    @property
    def gap(self) -> float | None:
        """Mean S0 pass@1 minus mean LoRA pass@1 (pp); None without both."""
        if self.s0.empty or self.lora.empty:
            return None
        return float(self.s0.value.mean() - self.lora.value.mean())

    @property
    def gap_se(self) -> float | None:
        return gap_se(self.s0, self.lora)

    def welch(self) -> stats.TestResult | None:
        return stats.welch_ttest(self.s0.value, self.lora.value) if len(self.s0) and len(self.lora) else None


def _first(m: pd.DataFrame, column: str) -> Any:
    vals = m[column].dropna() if column in m else pd.Series(dtype=object)
    return vals.iloc[0] if len(vals) else None


def expressiveness_rows(metrics: pd.DataFrame) -> list[ModelGap]:
    """One ModelGap per model in the expressiveness records (the model each run really used: a tiny model in
    smoke runs), matrix states first, then by state entries per layer."""
    if metrics.empty or "experiment" not in metrics:
        return []
    mine = metrics[metrics.experiment == EXPERIMENT]
    out = []
    for model in sorted(set(mine.model.dropna())):
        m = mine[mine.model == model]
        family = str(_first(m, "family") or "")
        s0_n = select(metrics, EXPERIMENT, "s0", metric="trainable_params", model=model)
        lora_n = select(metrics, EXPERIMENT, "lora", metric="trainable_params", model=model)
        r = _first(m[m.arm == "lora"], "r")
        arch = model_arch(model, family)
        out.append(
            ModelGap(
                model, family,
                select(metrics, EXPERIMENT, "baseline", model=model),
                select(metrics, EXPERIMENT, "s0", model=model),
                select(metrics, EXPERIMENT, "lora", model=model),
                float(s0_n.value.iloc[0]) if len(s0_n) else None,
                float(lora_n.value.iloc[0]) if len(lora_n) else None,
                int(r) if r is not None and not (isinstance(r, float) and math.isnan(r)) else None,
                n_recurrent_layers(family, arch) if arch is not None and family else None,
            )
        )  # fmt: skip
    return sorted(out, key=lambda g: (g.structure != "matrix", g.entries_per_layer or 0.0, g.model))


def _count(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x / 1e6:.2f}M" if x >= 1e5 else f"{x:,.0f}"


@with_protocol
def table_expressiveness(res: Results, ref: pd.DataFrame | None = None) -> Table:
    """Per model: kind, state structure, state entries per layer, S0 and LoRA trainable counts, pass@1 of
    baseline / S0 / rank-matched LoRA (mean ± sd over seeds), S0 − LoRA with a Welch p. `ref` is unused: the
    paper has no values here (the argument keeps the table interface)."""
    m, cells = res.metrics, []
    static: dict[str, dict[str, str]] = {"Kind": {}, "State": {}, "Entries / layer": {}, "S0 params": {},
                                         "LoRA r (params)": {}}  # fmt: skip
    for g in expressiveness_rows(m):
        row = g.model
        static["Kind"][row] = g.kind
        static["State"][row] = g.structure
        static["Entries / layer"][row] = _count(g.entries_per_layer)
        static["S0 params"][row] = _count(g.s0_params)
        static["LoRA r (params)"][row] = f"r{g.lora_r} ({_count(g.lora_params)})" if g.lora_r else "—"
        cells.append(data_cell(m, g.base, row, "Baseline (%)", "pct", None))
        cells.append(data_cell(m, g.s0, row, "S0 (%)", "pct", None))
        cells.append(data_cell(m, g.lora, row, "LoRA (%)", "pct", None))
        cells.append(derived_cell(row, "S0 − LoRA (pp)", "pp", None, g.gap, [g.s0, g.lora], se=g.gap_se))
        cells.append(p_cell(row, "p (Welch)", None, g.welch(), [g.s0, g.lora]))
    if not cells:  # no runs yet: one row of missing cells, so the table says so rather than vanishing
        cells = [Cell("(no runs)", col, kind) for col, kind in (("Baseline (%)", "pct"), ("S0 (%)", "pct"),
                 ("LoRA (%)", "pct"), ("S0 − LoRA (pp)", "pp"), ("p (Welch)", "p"))]  # fmt: skip
    caption = (f"{HYPOTHESIS} HumanEval greedy pass@1 (problems 80-163), mean ± sd over seeds; LoRA's rank is "
               "chosen per model so its trainable count is closest to that model's S0 count (rank 1 is the "
               f"floor); p is Welch's two-sided t-test of S0 vs LoRA per-seed values. {NO_PAPER}")  # fmt: skip
    notes = ["Entries / layer = the S0 run's trainable count / the model's recurrent layers (conf/model/)."]
    return Table("table_expressiveness", "Issue 15: State expressiveness, S0 vs rank-matched LoRA by recurrence kind",
                 caption, "Model", cells, static, notes)  # fmt: skip


__all__ = ["KIND_LABEL", "ModelGap", "expressiveness_rows", "kind_label", "table_expressiveness"]
