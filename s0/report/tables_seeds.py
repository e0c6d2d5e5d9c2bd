"""Per-seed and pass@k tables: Tables 6, 7, 8 (App C, F) and Tables 9, 10 (App G).

Per-seed rows are shown beside the paper's but not judged (a rerun's seed 42 is not the paper's GPU run);
the Mean rows are. Same conventions as s0.report.tables (its docstring).
"""

from __future__ import annotations

import pandas as pd

from s0.report.reference import load_paper_values
from s0.report.table_core import Table, count_negatives, data_cell, paper_ref, with_protocol
from s0.report.table_data import MAIN_SEEDS, best_lora, degraded_frame, deltas
from s0.run.lookup import select
from s0.run.records import Results


def _seed_rows(paper_seeds: list[int], *frames: pd.DataFrame) -> list[int]:
    ours = sorted({int(s) for f in frames for s in f.get("seed", [])})
    return paper_seeds + [s for s in ours if s not in paper_seeds]


def _one_seed(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    return frame[frame.seed == seed] if len(frame) else frame


@with_protocol
def table6(res: Results, ref: pd.DataFrame | None = None) -> Table:
    """Per-seed LoRA results (Table 6): Δ and degraded problems for the best rank-24 arm, 10 seeds."""
    ref = load_paper_values() if ref is None else ref
    m = res.metrics
    arm = best_lora(m, "main_qwen", rank=24) or "__none__"
    d, dg = deltas(m, "main_qwen", arm), degraded_frame(res, "main_qwen", arm)
    p = dict(source="Table 6", experiment="main_qwen")
    cells = []
    for seed in _seed_rows(MAIN_SEEDS, d, dg):
        pr = paper_ref(ref, "pp", stat="value", seed=seed, metric="delta", **p)
        cells.append(data_cell(m, _one_seed(d, seed), str(seed), "LoRA Δ (pp)", "pp", pr, judge=False))
        pg = paper_ref(ref, "count", stat="value", seed=seed, metric="n_degraded", **p)
        cells.append(data_cell(m, _one_seed(dg, seed), str(seed), "Degraded", "count", pg, judge=False))
    cells.append(
        data_cell(m, d, "Mean", "LoRA Δ (pp)", "pp", paper_ref(ref, "pp", n=10, metric="delta", **p))
    )
    cells.append(data_cell(m, dg, "Mean", "Degraded", "count", None))
    caption = f"Qwen3.5-4B HumanEval, main_qwen arm {arm if arm != '__none__' else '— (none ran)'}."
    notes = ["Per-seed rows are shown side by side, not judged: a rerun's seed is not the paper's GPU run."]
    return Table("table6", "Table 6: Per-seed LoRA results", caption, "Seed", cells, notes=notes)


@with_protocol
def table7(res: Results, ref: pd.DataFrame | None = None) -> Table:
    """FalconH1-7B per-seed results at alpha 0.65 (Table 7): baseline, tuned, Δ, degraded."""
    ref = load_paper_values() if ref is None else ref
    m = res.metrics
    base, s0, d = (
        select(m, "main_falcon", "baseline"),
        select(m, "main_falcon", "s0"),
        deltas(m, "main_falcon", "s0"),
    )
    dg = degraded_frame(res, "main_falcon", "s0")
    p = dict(source="Table 7")
    cols = {"Baseline": (base, "pct", dict(method="baseline", metric="pass@1")),
            "Tuned": (s0, "pct", dict(method="s0", metric="pass@1")),
            "Δ (pp)": (d, "pp", dict(metric="delta")), "Degraded": (dg, "count", None)}  # fmt: skip
    cells = []
    for seed in _seed_rows([42, 7, 123], base, s0):
        for col, (f, kind, flt) in cols.items():
            pr = paper_ref(ref, kind, stat="value", seed=seed, **p, **flt) if flt else None
            cells.append(data_cell(m, _one_seed(f, seed), str(seed), col, kind, pr, judge=False))
    for col, (f, kind, flt) in cols.items():
        pr = paper_ref(ref, kind, n=3, **p, **flt) if flt else None
        cells.append(data_cell(m, f, "Mean", col, kind, pr))
    caption = "FalconH1-7B HumanEval held-out problems 80–163, S0 at alpha 0.65 (experiment main_falcon)."
    return Table("table7", "Table 7: FalconH1-7B per-seed results", caption, "Seed", cells)


@with_protocol
def table8(res: Results, ref: pd.DataFrame | None = None) -> Table:
    """Per-seed higher-rank LoRA (Table 8): Δ at rank 48 and 64, with collapsed seeds noted."""
    ref = load_paper_values() if ref is None else ref
    m = res.metrics
    frames = {"Rank 48 Δ (pp)": ("r48", deltas(m, "lora_rank_matched", "lora_r48")),
              "Rank 64 Δ (pp)": ("r64", deltas(m, "lora_rank_matched", "lora_r64"))}  # fmt: skip
    cells = []
    for seed in _seed_rows(MAIN_SEEDS, *(f for _, f in frames.values())):
        for col, (setting, f) in frames.items():
            pr = paper_ref(
                ref, "pp", source="Table 8", setting=setting, seed=seed, stat="value", metric="delta"
            )
            cells.append(data_cell(m, _one_seed(f, seed), str(seed), col, "pp", pr, judge=False))
    for col, (setting, f) in frames.items():
        pr = paper_ref(ref, "pp", n=10, source="Table 8", setting=setting, metric="delta")
        cells.append(data_cell(m, f, "Mean", col, "pp", pr))
    notes = []
    for col, (_, f) in frames.items():
        if len(f):
            _, text = count_negatives(f, collapse=True)
            notes.append(
                f"{col.split(' Δ')[0]}: {text} seeds negative (collapsed = below half the baseline)."
            )
    caption = "Qwen3.5-4B HumanEval, lr 5e-4, 50 steps, lora_alpha = 2r (experiment lora_rank_matched)."
    return Table("table8", "Table 8: Per-seed higher-rank LoRA", caption, "Seed", cells, notes=notes)


PASSK_ROWS = {"Baseline": ("baseline", dict(method="baseline")),
              "LoRA (r24, 4.7M)": ("lora_r24", dict(method="lora")),
              "S0 (12.6M)": ("s0", dict(method="s0"))}  # fmt: skip
KS = ("pass@1", "pass@5", "pass@10")


@with_protocol
def table9(res: Results, ref: pd.DataFrame | None = None) -> Table:
    """Sampled pass@k (Table 9): means over 3 seeds for baseline, LoRA r24 and S0."""
    ref = load_paper_values() if ref is None else ref
    m, cells = res.metrics, []
    for row, (arm, flt) in PASSK_ROWS.items():
        for k in KS:
            f = select(m, "passk", arm, metric=k)
            cells.append(
                data_cell(m, f, row, k, "pct", paper_ref(ref, n=3, source="Table 9", metric=k, **flt))
            )
    caption = "HumanEval held-out problems 80–163, sampled decoding, unbiased pass@k (experiment passk)."
    return Table("table9", "Table 9: HumanEval pass@k", caption, "Method", cells)


@with_protocol
def table10(res: Results, ref: pd.DataFrame | None = None) -> Table:
    """Per-seed pass@k (Table 10)."""
    ref = load_paper_values() if ref is None else ref
    m, cells = res.metrics, []
    for row, (arm, flt) in PASSK_ROWS.items():
        frames = {k: select(m, "passk", arm, metric=k) for k in KS}
        for seed in _seed_rows([7, 42, 123], *frames.values()):
            for k, f in frames.items():
                pr = paper_ref(ref, source="Table 10", seed=seed, stat="value", metric=k, **flt)
                cells.append(data_cell(m, _one_seed(f, seed), f"{row.split(' (')[0]} {seed}", k, "pct", pr, judge=False))  # fmt: skip
    caption = "Per-seed sampled pass@k estimates (experiment passk)."
    return Table("table10", "Table 10: Per-seed pass@k", caption, "Method, seed", cells)


SEED_TABLES = {"table6": table6, "table7": table7, "table8": table8, "table9": table9, "table10": table10}
