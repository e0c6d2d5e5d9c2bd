"""The paper's figures as pure functions of the results records: `Results` in, matplotlib `Figure` out.

    from s0.report.figures import fig1, fig3, fig4
    fig1(res).savefig("paper_figures/fig1.pdf")

Figure 1 (a) cross-architecture bars, ±1 std error bars and Welch significance stars (S0 vs LoRA);
         (b) first-character divergence positions of FAIL-to-PASS flips.
Figure 2 the computation graph, drawn from a model's real layer layout (s0.report.figures_graph).
Figure 3 (a) S0 gain vs Qwen3.5 size with ±1 std error bars; (b) the FalconH1 alpha sweep.
Figure 4 (a) divergence positions; (b) their cumulative distribution relative to completion length.

The paper's values are drawn as hollow black markers beside ours. A missing run draws no bar or point and
says "missing" where it would be, so it cannot be read as zero. No pyplot: each call builds its own Figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from s0 import stats
from s0.report.reference import load_paper_values, paper_rows, paper_value
from s0.report.table_data import deltas
from s0.report.table_expressiveness import expressiveness_rows
from s0.report.tables import best_lora, best_state_offset, experiment_arms, welch_test
from s0.report.tables_appendix import SCALING, scaling_frames
from s0.run.lookup import scope_label, select
from s0.run.mechanism import divergence_from_samples, mechanism_pairs
from s0.run.records import Results

TEAL = "#178f8f"  # S0, as in the paper
COLORS = {"Baseline": "#a6a6a6", "LoRA": "#e6913c", "State-offset": "#7b68c8", "S0": TEAL}
PAPER = dict(marker="D", facecolor="none", edgecolor="black", s=28, zorder=5, linewidths=1.0)
MISSING = dict(ha="center", va="bottom", fontsize=7, color="#b00020", rotation=90)


def _paper_legend(ax: Axes) -> None:
    ax.scatter([], [], label="paper", **PAPER)


def _mean_std(values: pd.Series) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _p(ref: pd.DataFrame, **filters: object) -> float:
    try:
        return paper_value(ref, **filters)
    except LookupError:
        return math.nan


# ------------------------------------------------------------------------------------------------ Fig 1a
def panel_cross_architecture(ax: Axes, res: Results, ref: pd.DataFrame | None = None) -> Axes:
    """Fig 1a: HumanEval pass@1 per method on Qwen3.5-4B and FalconH1-7B (hatched), ±1 std, stars."""
    ref = load_paper_values() if ref is None else ref
    m = res.metrics
    paper_groups = {"Qwen3.5-4B\n(GatedDeltaNet)": "main_qwen", "FalconH1-7B\n(Mamba-2)": "main_falcon"}
    # runs of another model (the demo's tiny smoke runs) are labelled with it, never with the paper's
    groups = [(scope_label(m, exp) or name, exp) for name, exp in paper_groups.items()]
    methods = ["Baseline", "LoRA", "State-offset", "S0"]
    width, seen, brackets = 0.2, set(), []
    for g, (_, exp) in enumerate(groups):
        lora = best_lora(m, exp)
        so_arm = best_state_offset(m) or "__none__"  # state_offset's selected alpha, as in Tables 1 and 3
        frames = {
            "Baseline": select(m, exp, "baseline"),
            "LoRA": select(m, exp, lora) if lora else select(m, exp, "__none__"),
            "State-offset": select(m, "state_offset", so_arm) if exp == "main_qwen" else None,
            "S0": select(m, exp, "s0"),
        }
        paper = {
            "Baseline": _p(ref, source="Table 1", experiment=exp, method="baseline", metric="pass@1"),
            "LoRA": _p(ref, source="Table 1", experiment=exp, method="lora", metric="pass@1", stat="mean"),
            "State-offset": _p(
                ref,
                source="Table 1",
                experiment="state_offset",
                method="state_offset",
                setting="",
                metric="pass@1",
                stat="mean",
            ),
            "S0": _p(ref, source="Table 1", experiment=exp, method="s0", metric="pass@1", stat="mean"),
        }
        present = [k for k in methods if frames[k] is not None]
        xs = {k: g + (i - (len(present) - 1) / 2) * width for i, k in enumerate(present)}
        labels = []  # the texts drawn in this group, which a bracket above it must clear
        for k in present:
            mean, std = _mean_std(frames[k].value)
            x = xs[k]
            if math.isnan(mean):
                labels.append(ax.text(x, 2, "missing", **MISSING))
            else:
                ax.bar(x, mean, width * 0.92, yerr=std, capsize=3, color=COLORS[k], edgecolor="black",
                       linewidth=0.6, hatch="//" if exp == "main_falcon" else None, error_kw=dict(lw=0.9))  # fmt: skip
                labels.append(ax.text(x, 1.5, f"{mean:.1f}", ha="center", va="bottom", fontsize=6.5,
                                      bbox=dict(facecolor="white", edgecolor="none", pad=0.6, alpha=0.8)))  # fmt: skip
                seen.add(k)
            if not math.isnan(paper[k]):
                ax.scatter([x], [paper[k]], **PAPER)
        d_s0, d_lo = deltas(m, exp, "s0"), deltas(m, exp, lora or "__none__")
        test = welch_test(d_s0, d_lo)
        if test is not None:
            tops = [sum(_mean_std(frames[k].value)) for k in present]  # clear every bar under the bracket
            top = max(t for t in tops if not math.isnan(t))
            mark = f"n/a ({test.reason})" if test.reason else stats.stars(test.pvalue)
            brackets.append((xs["LoRA"], xs["S0"], top, labels, mark, 7 if test.reason else 9))
    handles = [Patch(facecolor=COLORS[k], edgecolor="black", label=k if k in seen else f"{k} (missing)")
               for k in methods]  # fmt: skip
    handles.append(ax.scatter([], [], label="paper", **PAPER))
    ax.set_xticks(range(len(groups)), [name for name, _ in groups])
    ax.set_ylabel("HumanEval pass@1 (%)")
    ax.set_ylim(0, 122)  # headroom for the legend above the bars
    ax.set_yticks(range(0, 101, 20))
    ax.set_title("(a) Cross-architecture comparison", fontsize=10)
    ax.legend(handles=handles, fontsize=7, loc="upper left", ncol=5, frameon=False, title_fontsize=7,
              title="error bars ±1 std over seeds; stars: Welch t, S0 vs LoRA")  # fmt: skip
    _draw_brackets(ax, brackets, width)
    return ax


def _draw_brackets(ax: Axes, brackets: list[tuple], width: float) -> None:
    """Significance brackets from LoRA to S0, each above the bars AND the labels beneath it.

    The labels ("missing" written upwards, the values inside the bars) have a height in points, so they are
    measured after the figure is laid out, where a point's height in data units is final."""
    if not brackets:
        return
    fig = ax.get_figure(root=True)
    fig.draw_without_rendering()
    to_data = ax.transData.inverted()
    for x0, x1, top, labels, mark, size in brackets:
        y = top + 4
        for t in labels:
            (lx0, _), (lx1, ly1) = to_data.transform(t.get_window_extent().get_points())
            if lx1 > x0 - width / 2 and lx0 < x1 + width / 2:  # under the bracket's span
                y = max(y, ly1 + 3)
        ax.plot([x0, x0, x1, x1], [y - 1.5, y, y, y - 1.5], color="black", lw=0.8)
        ax.text((x0 + x1) / 2, y + 0.5, mark, ha="center", va="bottom", fontsize=size)


# ------------------------------------------------------------------------------------- divergence panels
def _flips(res: Results) -> tuple[pd.DataFrame, str]:
    """The flips of the mechanism runs, and what to say when there are none."""
    pairs = mechanism_pairs(res.metrics)
    if not pairs:
        return pd.DataFrame(columns=["position", "rel_position"]), "no mechanism runs (baseline and S0)"
    flips = divergence_from_samples(res.samples, pairs).flips
    return flips, f"no FAIL-to-PASS flips in {len(pairs)} mechanism seed(s)"


def _paper_positions(ref: pd.DataFrame) -> list[int]:
    n = _p(ref, source="Sec 6.3", metric="n_flips")
    n0 = _p(ref, source="Sec 6.3", metric="n_flips_pos0")
    late = [int(v) for v in paper_rows(ref, source="Sec 6.3", metric="divergence_position").value]
    return [0] * int(n0) + late if not math.isnan(n) else []


def _no_data(ax: Axes, what: str) -> Axes:
    ax.set_xticks([])  # no data: the 0-1 ticks of an empty axes would read as a scale
    ax.set_yticks([])
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center", color="#b00020", wrap=True)
    return ax


def panel_first_character(ax: Axes, res: Results, ref: pd.DataFrame | None = None) -> Axes:
    """Fig 1b: divergence position (characters) of each FAIL-to-PASS flip; position 0 in teal."""
    ref = load_paper_values() if ref is None else ref
    f, why = _flips(res)
    ax.set_title("(b) First-character divergence", fontsize=10)
    ax.set_xlabel("FAIL-to-PASS flip (sorted)")
    ax.set_ylabel("first differing character")
    if f.empty:
        return _no_data(ax, why)
    pos = np.sort(f.position.to_numpy())
    x = np.arange(1, len(pos) + 1)
    at0 = pos == 0
    ax.scatter(x[at0], pos[at0], color=TEAL, s=22, label="position 0", zorder=3)
    ax.scatter(x[~at0], pos[~at0], color="#777777", s=22, label="later", zorder=3)
    paper = _paper_positions(ref)
    if paper:
        ax.scatter(np.arange(1, len(paper) + 1), sorted(paper), **{**PAPER, "s": 14})
        _paper_legend(ax)
    ax.text(0.02, 0.95, f"{at0.sum()}/{len(pos)} ({100 * at0.mean():.0f}%) at position 0", transform=ax.transAxes,
            va="top", fontsize=8)  # fmt: skip
    ax.legend(fontsize=7, loc="center left", frameon=False)
    return ax


def fig1(res: Results, ref: pd.DataFrame | None = None) -> Figure:
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    a, b = fig.subplots(1, 2, width_ratios=[1.5, 1])
    panel_cross_architecture(a, res, ref)
    panel_first_character(b, res, ref)
    return fig


# ------------------------------------------------------------------------------------------------ Fig 3
def panel_scaling(ax: Axes, res: Results, ref: pd.DataFrame | None = None) -> Axes:
    """Fig 3a: mean per-seed S0 gain (pp) per Qwen3.5 size, ±1 std error bars, paper values beside."""
    ref = load_paper_values() if ref is None else ref
    rows = scaling_frames(res.metrics)
    labels = [f"{r.replace('Qwen3.5-', '')}\n(n={len(v[3])})" for r, v in rows.items()]
    for i, (row, (model, _, _, d)) in enumerate(rows.items()):
        mean, std = _mean_std(d.value)
        if math.isnan(mean):
            ax.text(i, 0.5, "missing", **MISSING)
        else:
            ax.errorbar(i, mean, yerr=std, fmt="o", color=TEAL, capsize=4, ms=6, zorder=4)
        if row in SCALING:
            pm, ps = (
                _p(ref, source="App H", model=model, metric="delta", stat="mean"),
                _p(ref, source="App H", model=model, metric="delta", stat="std"),
            )
            ax.errorbar(i + 0.12, pm, yerr=ps, fmt="none", ecolor="black", capsize=2, lw=0.8)
            ax.scatter([i + 0.12], [pm], **PAPER)
    ax.errorbar([], [], yerr=[], fmt="o", color=TEAL, label="S0 (ours)")
    _paper_legend(ax)
    ax.axhline(0, color="#999999", lw=0.6)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("Qwen3.5 model size")
    ax.set_ylabel("S0 gain over baseline (pp)")
    ax.set_title("(a) Scaling", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return ax


def panel_falcon_alpha(ax: Axes, res: Results, ref: pd.DataFrame | None = None) -> Axes:
    """Fig 3b: FalconH1 pass@1 vs alpha, with the baseline and LoRA as horizontal references."""
    ref = load_paper_values() if ref is None else ref
    m, exp = res.metrics, "alpha_sweep_falcon"
    arms = {a: float(f["alpha"]) for a, f in experiment_arms(exp).items() if f.get("method") == "s0"}
    pts = [(alpha, *_mean_std(select(m, exp, a).value)) for a, alpha in arms.items()]
    have = [(a, y, s) for a, y, s in pts if not math.isnan(y)]
    if have:
        a, y, s = map(np.asarray, zip(*have))
        ax.errorbar(a, y, yerr=s, fmt="o-", color=TEAL, capsize=3, label="S0 (ours)", zorder=4)
    for alpha, y, _ in pts:
        if math.isnan(y):
            ax.text(alpha, 2, "missing", **MISSING)
    base = _mean_std(select(m, exp, "baseline").value)[0]
    if math.isnan(base):
        base = _mean_std(select(m, "main_falcon", "baseline").value)[0]
    if not math.isnan(base):
        ax.axhline(base, color=COLORS["Baseline"], ls="--", lw=1.2, label="baseline (ours)")
    lora = best_lora(m, "main_falcon")
    lm, ls = _mean_std(select(m, "main_falcon", lora).value) if lora else (math.nan, math.nan)
    if not math.isnan(lm):
        ax.axhspan(lm - ls, lm + ls, color=COLORS["LoRA"], alpha=0.15, lw=0)
        ax.axhline(lm, color=COLORS["LoRA"], lw=1.2, label="LoRA r24 (ours, ±1 std)")
    fal = _p(ref, source="Table 1", experiment="main_falcon", method="baseline", metric="pass@1")
    plateau = _p(ref, source="App E", experiment=exp, metric="pass@1")
    paper_pts = [(0.07, fal + _p(ref, source="App E", experiment=exp, setting="alpha=0.07", metric="delta"))]
    paper_pts += [(a, plateau) for a in (0.6, 0.65, 0.7)]
    ax.scatter(*zip(*paper_pts), **PAPER, label="paper")
    ax.scatter([2.0], [fal], marker="v", color="black", s=30, zorder=5, label="paper: below baseline at α=2")
    ax.set_xscale("log")
    ax.set_xlabel("state scale α (log)")
    ax.set_ylabel("HumanEval pass@1 (%)")
    ax.set_ylim(0, 100)
    label = scope_label(m, exp)
    ax.set_title(f"(b) {label or 'FalconH1-7B'} alpha sweep", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return ax


def fig3(res: Results, ref: pd.DataFrame | None = None) -> Figure:
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    a, b = fig.subplots(1, 2)
    panel_scaling(a, res, ref)
    panel_falcon_alpha(b, res, ref)
    return fig


# ------------------------------------------------------------------------------------------------ Fig 4
def panel_positions(ax: Axes, res: Results, ref: pd.DataFrame | None = None) -> Axes:
    """Fig 4a: histogram of first-divergence positions (characters), position 0 in teal."""
    ref = load_paper_values() if ref is None else ref
    f, why = _flips(res)
    ax.set_title("(a) Divergence positions", fontsize=10)
    ax.set_xlabel("first differing character")
    ax.set_ylabel("FAIL-to-PASS flips")
    if f.empty:
        return _no_data(ax, why)
    paper = _paper_positions(ref)
    top = max([*f.position, *paper, 10])
    width = max(1, math.ceil(top / 40))
    bins = np.arange(0, top + 2 * width, width)
    counts, edges = np.histogram(f.position, bins=bins)
    colors = [TEAL if lo == 0 else "#888888" for lo in edges[:-1]]
    ax.bar(
        edges[:-1], counts, width=width, align="edge", color=colors, edgecolor="black", lw=0.4, label="ours"
    )
    if paper:  # hollow markers on each bin's count, as the paper's values elsewhere: an outline drawn over
        pc, _ = np.histogram(paper, bins=bins)  # bars of the same height would vanish into their edges
        at = pc > 0
        ax.scatter(edges[:-1][at] + width / 2, pc[at], **PAPER, label="paper")
    n0 = int((f.position == 0).sum())
    ax.text(0.98, 0.95, f"{n0} of {len(f)} ({100 * n0 / len(f):.0f}%) at position 0", transform=ax.transAxes,
            ha="right", va="top", fontsize=8)  # fmt: skip
    ax.legend(fontsize=7, loc="center right", frameon=False)
    return ax


def panel_cdf(ax: Axes, res: Results, ref: pd.DataFrame | None = None, window: float = 0.10) -> Axes:
    """Fig 4b: empirical CDF of the divergence position relative to completion length (%)."""
    ref = load_paper_values() if ref is None else ref
    f, why = _flips(res)
    ax.set_title("(b) Cumulative distribution", fontsize=10)
    ax.set_xlabel("divergence position (% of completion)")
    ax.set_ylabel("share of flips")
    if f.empty:
        return _no_data(ax, why)
    x = np.sort(100 * f.rel_position.to_numpy())
    y = np.arange(1, len(x) + 1) / len(x)
    ax.step(np.r_[0, x], np.r_[0, y], where="post", color=TEAL, lw=1.6, label="ours")
    ax.axvline(100 * window, color="black", ls="--", lw=0.8, label=f"first {100 * window:.0f}%")
    pm = _p(ref, source="Fig 4", metric="divergence_rel_position", stat="mean")
    ax.text(0.98, 0.05, f"mean {x.mean():.2f}%, median {np.median(x):.1f}%\n(paper: mean {pm:.2f}%, median "
            f"{_p(ref, source='Fig 4', metric='divergence_rel_position', stat='median'):.1f}%)",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xlim(-0.5, max(15.0, float(x.max()) * 1.05))
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="center right", frameon=False)
    return ax


def fig4(res: Results, ref: pd.DataFrame | None = None) -> Figure:
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    a, b = fig.subplots(1, 2)
    panel_positions(a, res, ref)
    panel_cdf(b, res, ref)
    return fig


# ------------------------------------------------------------------------------------ expressiveness
STRUCTURE_STYLE = {"matrix": dict(marker="o", color=TEAL), "diagonal": dict(marker="s", color="#b8562e")}


def fig_expressiveness(res: Results, ref: pd.DataFrame | None = None) -> Figure:
    """Issue 15 (paper Sec 2 / Sec 8 hypothesis, no paper values): S0 − LoRA pass@1 gap (pp, ±1 standard error
    of the difference) against state entries per recurrent layer, log x; matrix and diagonal states marked
    apart. A model without both arms or without a per-layer count is listed as missing, never drawn at 0."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.set_title("S0 − rank-matched LoRA vs state size (no paper values)", fontsize=10)
    rows = expressiveness_rows(res.metrics)
    drawn = [g for g in rows if g.gap is not None and g.entries_per_layer]
    missing = [g.model for g in rows if g not in drawn]
    if not drawn:
        return _no_data(ax, "missing: no expressiveness runs with both S0 and LoRA") and fig
    for structure, style in STRUCTURE_STYLE.items():
        gs = [g for g in drawn if g.structure == structure]
        if not gs:
            continue
        x, y = [g.entries_per_layer for g in gs], [g.gap for g in gs]
        yerr = [g.gap_se or 0.0 for g in gs]
        ax.errorbar(x, y, yerr=yerr, fmt=style["marker"], color=style["color"], capsize=3, ms=7, zorder=4,
                    label=f"{structure} state")  # fmt: skip
        for g in gs:
            ax.annotate(f"{g.model}\n({g.kind})", (g.entries_per_layer, g.gap), fontsize=6,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.axhline(0, color="#999999", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("state entries per recurrent layer")
    ax.set_ylabel("S0 − LoRA pass@1 (pp)")
    if missing:
        ax.text(
            0.02, 0.02, f"missing: {', '.join(missing)}", transform=ax.transAxes, fontsize=6, color="#b00020"
        )
    ax.legend(fontsize=7, loc="upper left", frameon=False)
    return fig


# fig2 needs a model layout: s0.report.figures_graph.fig2
FIGURES = {"fig1": fig1, "fig3": fig3, "fig4": fig4, "fig_expressiveness": fig_expressiveness}
