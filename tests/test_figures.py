"""Figures render from the paper fixtures, from tiny-model demo records and from nothing, and read like the
paper's: axis labels, ±1 std error bars, significance stars, legends, and "missing" where a run is absent.

The tiny demo records here are written by hand in the layout `python run.py ... debug=smoke` produces
(tiny models, 4 problems); tests/test_report.py::test_demo_end_to_end (slow) makes them with the real runner.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from s0.report.figures import FIGURES, fig1, fig3, fig4
from s0.report.figures_graph import fig2, layout_from_conf
from s0.report.tables import load_records
from s0.run import records
from s0.run.records import Results

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def paper() -> Results:
    return load_records(FIXTURES / "paper_records", FIXTURES / "paper_summaries")


IDS = [f"HumanEval/{80 + i}" for i in range(4)]


def write_run(root, run_id, members, model, method, correct, texts, alpha=None, seed=42) -> None:
    """One finished smoke run (4 problems) in the layout the runner writes."""
    d = root / run_id
    records.write_json(d / "run.json", {
        "experiment": members[0][0], "arm": members[0][1], "seed": seed,
        "model": {"name": model, "family": model.removeprefix("tiny_"), "weights": "random"},
        "method": {"name": method, "alpha": alpha, "alpha_mode": "inference", "layers": None, "lr": 1e-3,
                   "steps": 2, "r": 24, "max_train_examples": None},
        "task": {"name": "humaneval"}, "eval_task": {"name": "humaneval"}, "eval": {"mode": "greedy"}})  # fmt: skip
    records.write_json(d / "metrics.json", {"pass@1": 100 * sum(correct) / 4, "n_eval": 4.0, "n_train": 4.0})
    records.write_jsonl(d / "samples.jsonl", [
        {"id": i, "sample": 0, "correct": c, "completion": t} for i, c, t in zip(IDS, correct, texts)])  # fmt: skip
    for exp, arm in members:
        records.add_membership(d, exp, arm)
    records.mark_done(d, {})


def write_demo(root: Path) -> Path:
    """Smoke-size records: tiny Qwen3.5 / FalconH1, 4 problems, seed 42; S0 flips one problem at character 0."""
    run = functools.partial(write_run, root)

    base_members = [("main_qwen", "baseline"), ("mechanism", "baseline"), ("scaling", "baseline")]
    run("b", base_members, "tiny_qwen3_5", "baseline", [True, False, False, False], ["\n\n"] * 4)
    run("s", [("main_qwen", "s0"), ("mechanism", "s0"), ("scaling", "s0")], "tiny_qwen3_5", "s0",
        [True, True, False, False], ["\n\n", "return x", "\n\n", "\n\n"], alpha=0.07)  # fmt: skip
    run("fb", [("main_falcon", "baseline"), ("alpha_sweep_falcon", "baseline")], "tiny_falcon_h1", "baseline",
        [False] * 4, ["\n"] * 4)  # fmt: skip
    run("fs", [("main_falcon", "s0"), ("alpha_sweep_falcon", "s0_a0.65")], "tiny_falcon_h1", "s0",
        [False, False, False, True], ["\n"] * 4, alpha=0.65)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Results:
    return load_records(write_demo(tmp_path_factory.mktemp("demo")))


def write_zero_demo(root: Path) -> Path:
    """What `make demo` writes: baseline, S0 and one LoRA arm per tiny model, seeds 42 and 7, every pass@1 0
    (so the Welch tests are undefined: zero variance), no state-offset run."""
    arms = {
        "tiny_qwen3_5": ("main_qwen", "lora_r24_lr5e-4"),
        "tiny_falcon_h1": ("main_falcon", "lora_r24_lr1e-4"),
    }
    for model, (exp, lora) in arms.items():
        for seed in (42, 7):
            for arm, method in (("baseline", "baseline"), ("s0", "s0"), (lora, "lora")):
                write_run(root, f"{model}-{arm}-{seed}", [(exp, arm)], model, method, [False] * 4, ["\n"] * 4,
                          seed=seed)  # fmt: skip
    return root


def texts(fig) -> str:
    return " ".join(
        t.get_text() for ax in fig.axes for t in [*ax.texts, ax.xaxis.label, ax.yaxis.label, ax.title]
    )


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_fig1_reads_like_the_paper(paper: Results, tmp_path: Path) -> None:
    fig = fig1(paper)
    a, b = fig.axes
    assert a.get_ylabel() == "HumanEval pass@1 (%)" and b.get_ylabel() == "first differing character"
    bars = [c for c in a.containers if isinstance(c, BarContainer)]
    assert len(bars) == 7  # Qwen: baseline, LoRA, state-offset, S0; Falcon: baseline, LoRA, S0 (no offset)
    assert sum(isinstance(c, ErrorbarContainer) for c in a.containers) == 7  # ±1 std on every bar
    assert [bars[k].patches[0].get_hatch() for k in (0, 4)] == [None, "//"]  # Falcon hatched
    assert {"***", "n.s."} <= {t.get_text() for t in a.texts}
    assert {"Baseline", "LoRA", "State-offset", "S0", "paper"} <= set(legend(a))
    assert "23/27 (85%) at position 0" in texts(fig)
    fig.savefig(tmp_path / "fig1.png")
    assert (tmp_path / "fig1.png").stat().st_size > 10_000


def test_fig3_and_fig4_read_like_the_paper(paper: Results) -> None:
    a, b = fig3(paper).axes
    assert a.get_ylabel() == "S0 gain over baseline (pp)" and [
        t.get_text().split("\n")[0] for t in a.get_xticklabels()
    ] == ["0.8B", "2B", "4B", "9B"]
    assert sum(isinstance(c, ErrorbarContainer) for c in a.containers) >= 8  # ours and the paper's, 4 sizes
    assert b.get_xscale() == "log" and "LoRA r24 (ours, ±1 std)" in legend(b) and "paper" in legend(b)
    a, b = fig4(paper).axes
    assert sum(p.get_height() for p in a.patches) == 27 and "23 of 27 (85%) at position 0" in texts(
        fig4(paper)
    )
    assert b.get_xlabel() == "divergence position (% of completion)" and "first 10%" in legend(b)


def test_figures_render_from_tiny_demo_records(demo: Results, tmp_path: Path) -> None:
    for name, fn in FIGURES.items():
        fig = fn(demo)
        fig.savefig(tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5_000
    assert "missing" in texts(fig1(demo))  # no LoRA run: said, not drawn as zero
    assert "1/1 (100%) at position 0" in texts(fig1(demo))
    assert "tiny_qwen3_5" in [t.get_text().split("\n")[0] for t in fig3(demo).axes[0].get_xticklabels()]


def test_fig1_labels_tiny_runs_with_their_model_and_never_pools_them(demo: Results, paper: Results) -> None:
    ticks = [t.get_text() for t in fig1(demo).axes[0].get_xticklabels()]
    assert ticks == ["tiny_qwen3_5 (smoke)", "tiny_falcon_h1 (smoke)"]
    both = Results(pd.concat([paper.metrics, demo.metrics]), pd.concat([paper.samples, demo.samples]))
    a = fig1(both).axes[0]
    assert a.get_xticklabels()[0].get_text() == "Qwen3.5-4B\n(GatedDeltaNet)"
    heights = [round(c.patches[0].get_height(), 1) for c in a.containers if isinstance(c, BarContainer)]
    assert heights == [round(h.get_height(), 1) for c in fig1(paper).axes[0].containers
                       if isinstance(c, BarContainer) for h in c.patches[:1]]  # fmt: skip


def test_figures_with_no_records_say_missing() -> None:
    empty = Results(pd.DataFrame(), pd.DataFrame())
    for fn in FIGURES.values():
        fig = fn(empty)
        assert "missing" in texts(fig) or "no mechanism runs" in texts(fig)
        assert not any(isinstance(c, BarContainer) and len(c) for ax in fig.axes for c in ax.containers)


def test_fig2_is_drawn_from_the_real_layer_layout() -> None:
    layout, name, total = layout_from_conf("qwen3_5_4b")
    assert [b.kind for b in layout[:4]] == ["gdn", "gdn", "gdn", "attention"] and len(layout) == 32
    fig = fig2(layout, name, total)
    t = texts(fig)
    assert t.count("$S_0^{") == 24 and t.count("Attn ") == 8  # one S0 chip per GDN layer
    assert "12.6M" in t and "0.3% of" in t and "24 recurrent, 8 attention-only" in t
    falcon, _, ftotal = layout_from_conf("falcon_h1_7b")
    assert len(falcon) == 44 and all(b.kind == "mamba2+attention" for b in falcon)
    assert "34.6M" in texts(fig2(falcon, "FalconH1-7B", ftotal))
    tiny, _, _ = layout_from_conf("tiny_qwen3_5")
    assert sum(b.recurrent for b in tiny) == 6
    plain, _, _ = layout_from_conf("tiny_qwen2")  # a pure Transformer: nothing to inject into
    assert not any(b.recurrent for b in plain) and "Learned: 0 × S0" in texts(fig2(plain))


def _boxes(fig, artists) -> list:
    renderer = fig._get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


def test_fig1_brackets_clear_the_labels_beneath_them(tmp_path: Path) -> None:
    """The demo's Fig 1a: LoRA and S0 at 0 with an undefined test, state-offset missing between them. The
    upright "missing" and the value labels must not run into the bracket or its "n/a (zero variance)"."""
    fig = fig1(load_records(write_zero_demo(tmp_path)))
    fig.savefig(tmp_path / "fig1.png", dpi=150)  # lays the figure out as the demo's PNG
    a = fig.axes[0]
    brackets = [ln for ln in a.lines if len(ln.get_xdata()) == 4]
    marks = [t for t in a.texts if t.get_text().startswith("n/a")]
    labels = [t for t in a.texts if t.get_text() == "missing" or t.get_text() == "0.0"]
    assert len(brackets) == 2 and len(marks) == 2 and sum(t.get_text() == "missing" for t in labels) == 1
    for box in _boxes(fig, labels):
        for other in _boxes(fig, [*brackets, *marks]):
            assert not box.overlaps(other), (box, other)


def _visible(handle) -> bool:
    """Whether a legend handle draws anything: a line, a marker, a filled or outlined patch."""
    from matplotlib.collections import Collection
    from matplotlib.colors import to_rgba_array
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if isinstance(handle, Line2D):
        line = handle.get_linestyle() not in ("None", "", " ") and handle.get_linewidth() > 0
        mark = handle.get_marker() not in (None, "None", "", " ") and handle.get_markersize() > 0
        return (line or mark) and to_rgba_array(handle.get_color())[:, 3].max() > 0
    if isinstance(handle, Collection):  # markers (sizes) or line segments
        face = to_rgba_array(handle.get_facecolor())
        edge = to_rgba_array(handle.get_edgecolor())
        outlined = bool(len(edge)) and edge[:, 3].max() > 0 and max(handle.get_linewidths(), default=0) > 0
        if not hasattr(handle, "get_sizes"):
            return outlined
        filled = bool(len(face)) and face[:, 3].max() > 0
        return len(handle.get_sizes()) > 0 and handle.get_sizes().max() > 0 and (filled or outlined)
    if isinstance(handle, Patch):
        return handle.get_facecolor()[3] > 0 or (handle.get_edgecolor()[3] > 0 and handle.get_linewidth() > 0)
    return False


def test_every_legend_entry_has_a_visible_mark(paper: Results, demo: Results) -> None:
    for res in (paper, demo):
        for fn in FIGURES.values():
            for ax in fn(res).axes:
                if ax.get_legend() is not None:
                    hidden = [t.get_text() for h, t in zip(ax.get_legend().legend_handles, ax.get_legend().get_texts())
                              if not _visible(h)]  # fmt: skip
                    assert not hidden, (ax.get_title(), hidden)


def test_fig4a_paper_counts_show_over_bars_of_the_same_height(paper: Results) -> None:
    """On the paper's own flips ours and the paper's histograms coincide: an outline drawn along our bars'
    edges is invisible, so the paper's counts are hollow markers on top of each bin, as in the other figures."""
    from matplotlib.collections import PathCollection

    a = fig4(paper).axes[0]
    marks = [c for c in a.collections if c.get_label() == "paper"]
    assert len(marks) == 1 and isinstance(marks[0], PathCollection)
    heights = sorted(round(p.get_height()) for p in a.patches if p.get_height() > 0)
    assert sorted(round(y) for _, y in marks[0].get_offsets()) == heights  # one marker per paper bin
    assert marks[0].get_zorder() > max(p.get_zorder() for p in a.patches)
    handle = dict(zip(legend(a), a.get_legend().legend_handles))["paper"]
    assert isinstance(handle, PathCollection) and _visible(handle)
