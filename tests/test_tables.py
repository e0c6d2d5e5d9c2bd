"""Tables from records: the paper's own per-seed values reproduce its aggregates, missing runs stay missing,
and a golden file guards each table's Markdown.

Golden files: tests/golden/<table>.md, built from tests/fixtures/paper_records + paper_summaries. After an
intended change to a table, refresh them and review the diff:

    S0_UPDATE_GOLDEN=1 python -m pytest tests/test_tables.py -k golden
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from s0.report.reference import load_paper_values
from s0.report.table_core import Cell, PaperRef, write_table
from s0.report.tables import all_tables, build_tables, load_records, selection_arms
from s0.run.mechanism import load_analyses
from s0.run.records import Results

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("S0_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="module")
def per_seed() -> Results:
    """Only what the paper prints per seed (Tables 5, 6, 7, 8, 10, the Sec 6.3 flips)."""
    return load_records(FIXTURES / "paper_records")


@pytest.fixture(scope="module")
def fixtures() -> Results:
    res = load_records(FIXTURES / "paper_records", FIXTURES / "paper_summaries")
    res.analyses = load_analyses(
        FIXTURES / "paper_records"
    )  # the Sec 6.2 / App H scalars (see make_paper_records)
    return res


@pytest.fixture(scope="module")
def ref() -> pd.DataFrame:
    return load_paper_values()


def _tables(res: Results, ref: pd.DataFrame) -> dict:
    key = (id(res), id(ref))
    if key not in _BUILT:  # building every table takes ~2 s; the tests below share one build per input
        analyses = getattr(res, "analyses", None)
        built = {
            k: fn(res, ref, analyses) if k == "table_sec6" else fn(res, ref) for k, fn in all_tables().items()
        }
        _BUILT[key] = (res, built)
    return _BUILT[key][1]


_BUILT: dict = {}


def test_fixtures_are_complete_runs(per_seed: Results, fixtures: Results) -> None:
    assert not per_seed.unfinished and not per_seed.corrupt
    assert (
        per_seed.metrics.run_id.nunique() == 61 and not per_seed.metrics.run_id.str.startswith("synth-").any()
    )
    synth = fixtures.metrics[~fixtures.metrics.run_id.isin(per_seed.metrics.run_id)]
    assert len(synth) and synth.run_id.str.startswith("synth-").all()  # synthesised runs say so in their id


# ---------------------------------------------------------------------------------- acceptance (issue 6)
def test_lora_aggregates_from_per_seed_values(per_seed: Results, ref: pd.DataFrame) -> None:
    """Tables 6 and 8 per seed -> Table 2: r24 +12.7 ± 5.1 with 0/10 negative, r48 +2.1 ± 17.0, r64
    -15.5 ± 18.9 with 8/10 negative."""
    t2 = _tables(per_seed, ref)["table2"]
    expect = {"LoRA r24": ("+12.7 ± 5.1", "0/10"), "LoRA r48": ("+2.1 ± 17.0", "1/10 (1 collapsed)"),
              "LoRA r64": ("-15.5 ± 18.9", "8/10")}  # fmt: skip
    for row, (delta, negative) in expect.items():
        cell = t2.cell(row, "Mean Δ (pp)")
        assert cell.ours(with_n=False).removesuffix(" ✓") == delta and cell.n == 10
        assert cell.status == "agree"
        assert t2.cell(row, "Seeds negative").ours() == negative
    # Table 6's per-seed degraded counts come back from the samples, seed by seed.
    t6 = _tables(per_seed, ref)["table6"]
    for seed, want in {42: 0, 1337: 10, 314: 11, 256: 12, 777: 14, 2024: 7}.items():
        assert t6.cell(str(seed), "Degraded").mean == want
    assert t6.cell("Mean", "LoRA Δ (pp)").ours(with_n=False) == "+12.7 ± 5.1 ✓"


def test_falcon_and_passk_aggregates(per_seed: Results, ref: pd.DataFrame) -> None:
    """Table 7 -> Falcon +31.3 ± 1.3 pp (and 71.8 ± 1.3 in Table 1); Table 10 -> Table 9's means."""
    t = _tables(per_seed, ref)
    assert t["table7"].cell("Mean", "Δ (pp)").ours(with_n=False) == "+31.3 ± 1.3 ✓"
    assert t["table1"].cell("S0 (ours)", "FalconH1-7B (Mamba-2)").ours() == "71.8 ± 1.3 (n=3) ✓"
    want = {
        "Baseline": (41.9, 64.2, 69.4),
        "LoRA (r24, 4.7M)": (56.3, 64.1, 66.7),
        "S0 (12.6M)": (70.3, 84.5, 88.5),
    }
    for row, values in want.items():
        for k, v in zip(("pass@1", "pass@5", "pass@10"), values):
            cell = t["table9"].cell(row, k)
            assert f"{cell.mean:.1f}" == f"{v:.1f}" and cell.n == 3 and cell.status == "agree"


def test_every_cell_with_data_agrees_on_the_fixtures(fixtures: Results, ref: pd.DataFrame) -> None:
    for key, table in _tables(fixtures, ref).items():
        bad = [(c.row, c.column, c.ours(), c.paper_text()) for c in table.cells if c.status == "disagree"]
        assert not bad, (key, bad)
    t = _tables(fixtures, ref)
    assert t["table1"].cell("Welch p, S0 vs LoRA", "Qwen3.5-4B (GatedDeltaNet)").ours().startswith("0.0000")
    assert t["table_sec6"].cell("… diverging at character 0", "Value").ours() == "23 (85%)"
    assert t["table_sec6"].cell("Sign test p (first 10%, one-sided)", "Value").mean < 1e-8


# ------------------------------------------------------------------------------------------ missing runs
def test_missing_runs_show_as_missing_never_zero(ref: pd.DataFrame) -> None:
    empty = Results(pd.DataFrame(), pd.DataFrame())
    for key, table in _tables(empty, ref).items():
        for c in table.cells:
            assert c.status in ("missing", "n/a"), (key, c.row, c.column, c.status)
            assert c.ours() in ("—", "n/a")
        assert "0.0 (n=" not in table.to_markdown() and "nan" not in table.to_markdown().lower()
        frame = table.frame()
        assert frame.ours.isna().all() and (frame.n == 0).all()


def test_a_partial_experiment_keeps_other_cells_missing(per_seed: Results, ref: pd.DataFrame) -> None:
    t1 = _tables(per_seed, ref)["table1"]
    assert (
        t1.cell("S0 (ours)", "Qwen3.5-4B (GatedDeltaNet)").status == "missing"
    )  # no per-seed S0 in the paper
    assert t1.cell("State-offset", "FalconH1-7B (Mamba-2)").status == "n/a"
    assert t1.cell("LoRA (best config, selected on eval problems)", "Qwen3.5-4B (GatedDeltaNet)").n == 10


# ---------------------------------------------------------------------------------------- the judging
def test_disagreement_is_beyond_the_seed_spread() -> None:
    paper = PaperRef(72.2, 1.7, 10, "72.2 ± 1.7")
    close = Cell("S0", "q", "pct", paper, [71.0, 72.0, 73.0, 70.5, 72.5])
    far = Cell("S0", "q", "pct", paper, [60.0, 61.0, 62.0, 59.5, 61.5])
    assert close.status == "agree" and far.status == "disagree" and "✗" in far.ours()
    single = Cell("S0", "q", "pct", PaperRef(72.2, printed="72.2"), [66.0], n_eval=84)  # binomial noise only
    assert single.status == "agree" and single.tolerance > 10
    rng = Cell("a", "q", "pp", PaperRef(printed="+30 to +34", relation="range", lo=30, hi=34), [31.0, 33.0])
    assert rng.status == "agree"
    p = Cell("p", "q", "p", PaperRef(0.05, printed="n.s.", relation=">"), [0.002])
    assert p.status == "disagree"


def test_selection_rule_comes_from_the_experiment_config(fixtures: Results, ref: pd.DataFrame) -> None:
    assert selection_arms("main_qwen") == [
        "lora_r16_lr1e-4",
        "lora_r16_lr5e-4",
        "lora_r24_lr1e-4",
        "lora_r24_lr5e-4",
    ]
    assert selection_arms("main_falcon") == ["lora_r24_lr1e-4"]
    m = fixtures.metrics.copy()
    better = m[(m.arm == "lora_r24_lr5e-4") & (m.metric == "pass@1")].assign(
        arm="lora_r16_lr1e-4", value=99.0
    )
    t1 = _tables(Results(pd.concat([m, better]), fixtures.samples), ref)["table1"]
    md = t1.to_markdown()
    assert "LoRA (best config) is lora_r16_lr1e-4, the highest mean pass@1 of the 2 of 4 LoRA arms" in md
    assert "no runs of lora_r16_lr5e-4, lora_r24_lr1e-4." in md
    assert t1.cell("LoRA (best config, selected on eval problems)", "Qwen3.5-4B (GatedDeltaNet)").mean == 99.0


def test_table1_note_says_how_many_lora_arms_ran(fixtures: Results, ref: pd.DataFrame) -> None:
    """One LoRA arm of main_qwen's four ran (the paper fixtures, the demo): the note must not claim a choice
    among four; main_falcon's single arm is its only one; with no LoRA run the note says so."""
    notes = _tables(fixtures, ref)["table1"].notes
    assert notes == [
        "Qwen3.5-4B (GatedDeltaNet): LoRA (best config) is lora_r24_lr5e-4 (10 seeds), the only one of the 4 "
        "LoRA arms with runs, so nothing was selected; no runs of lora_r16_lr1e-4, lora_r16_lr5e-4, "
        "lora_r24_lr1e-4.",
        "FalconH1-7B (Mamba-2): LoRA is lora_r24_lr1e-4 (3 seeds), the experiment's only LoRA arm; nothing to "
        "select.",
    ]
    m = fixtures.metrics
    none = Results(m[~m.arm.str.startswith("lora")], fixtures.samples)
    note = _tables(none, ref)["table1"].notes[0]
    assert note.startswith("Qwen3.5-4B (GatedDeltaNet): no LoRA runs: none of the 4 LoRA arms (")


# ---------------------------------------------------------------------------------------------- outputs
def test_writes_markdown_latex_and_csv(fixtures: Results, tmp_path: Path) -> None:
    table = build_tables(fixtures, only=["table2"])[0]
    paths = write_table(table, tmp_path)
    assert [p.suffix for p in paths] == [".md", ".tex", ".csv"]
    tex = (tmp_path / "table2.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "$\\pm$" in tex
    csv = pd.read_csv(tmp_path / "table2.csv")
    assert {"row", "column", "paper", "ours", "n", "status", "run_ids"} <= set(csv.columns)
    assert csv.run_ids.str.contains("qwen4b-lora_r48-s555").any()


@pytest.mark.parametrize("key", list(all_tables()))
def test_golden(key: str, fixtures: Results, ref: pd.DataFrame) -> None:
    text = _tables(fixtures, ref)[key].to_markdown()
    path = GOLDEN / f"{key}.md"
    if UPDATE or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        if not UPDATE:
            pytest.fail(f"wrote missing golden file {path}; rerun")
    assert text == path.read_text(), f"{key} changed; S0_UPDATE_GOLDEN=1 to accept (see module docstring)"


# ------------------------------------------------------------------------ runs of different models (issue 10)
def write_run(root: Path, run_id: str, experiment: str, arm: str, model: str, value: float, seed: int = 42,
              weights: str = "hub", metrics: dict | None = None, protocol: str | None = None) -> None:  # fmt: skip
    """A finished run in the layout s0.run.pipeline writes; tiny models are what `debug=smoke` runs. `metrics`
    replaces metrics.json (pass@1 = value otherwise); `protocol` goes into run.json as the pipeline writes it."""
    from s0.run import records

    d = root / run_id
    records.write_json(d / "run.json", {
        "experiment": experiment, "arm": arm, "seed": seed,
        "model": {"name": model, "family": "qwen3_5", "weights": weights, "hub_id": None, "tiny": "tiny_qwen3_5"},
        "method": {"name": "baseline" if arm == "baseline" else "s0", "alpha": 0.07, "lr": 1e-3, "steps": 2},
        "task": {"name": "humaneval"}, "eval_task": {"name": "humaneval"}, "eval": {"mode": "greedy"},
        **({"protocol": protocol} if protocol else {})})  # fmt: skip
    records.write_json(d / "metrics.json", metrics or {"pass@1": value, "n_eval": 84.0})
    records.write_jsonl(d / "samples.jsonl", [])
    records.add_membership(d, experiment, arm)
    records.mark_done(d, {})


def test_tiny_and_real_runs_never_pool_in_a_cell(tmp_path: Path, ref: pd.DataFrame) -> None:
    for seed in (42, 7):  # the paper's model with hub weights, and smoke runs of the same experiment/arm/seed
        write_run(tmp_path, f"real-b{seed}", "main_qwen", "baseline", "qwen3_5_4b", 50.0, seed)
        write_run(tmp_path, f"real-s{seed}", "main_qwen", "s0", "qwen3_5_4b", 70.0 + seed % 2, seed)
        write_run(tmp_path, f"tiny-b{seed}", "main_qwen", "baseline", "tiny_qwen3_5", 0.0, seed, "random")
        write_run(tmp_path, f"tiny-s{seed}", "main_qwen", "s0", "tiny_qwen3_5", 0.0, seed, "random")
    t1 = build_tables(load_records(tmp_path), only=["table1"])[0]
    q = "Qwen3.5-4B (GatedDeltaNet)"
    assert t1.cell("Baseline", q).values == [50.0, 50.0] and t1.cell("S0 (ours)", q).mean == 70.5
    assert not any(r.startswith("tiny") for r in t1.run_ids) and "smoke" not in t1.to_markdown()


def test_only_tiny_runs_are_labelled_with_the_tiny_model(tmp_path: Path) -> None:
    write_run(tmp_path, "tb", "main_qwen", "baseline", "tiny_qwen3_5", 0.0, weights="random")
    write_run(tmp_path, "ts", "main_qwen", "s0", "tiny_qwen3_5", 25.0, weights="random")
    t1, t2 = build_tables(load_records(tmp_path), only=["table1", "table2"])
    assert "tiny_qwen3_5 (smoke)" in t1.columns and "Qwen3.5-4B (GatedDeltaNet)" not in t1.columns
    cell = t1.cell("S0 (ours)", "tiny_qwen3_5 (smoke)")
    assert (
        cell.mean == 25.0 and cell.status == "info" and "✗" not in cell.ours()
    )  # not judged against the paper
    md = t1.to_markdown()
    assert (
        "Qwen3.5-4B (GatedDeltaNet)" not in md and "Runs of tiny_qwen3_5 (smoke), not the paper's model" in md
    )
    assert t2.models == ["tiny_qwen3_5 (smoke)"] and "tiny_qwen3_5 (smoke)" in t2.to_markdown()
    assert "| Params (paper's models) |" in md  # 12.6M / 34.6M are not the tiny models' counts


def test_a_cell_that_would_mix_models_stops_the_build(tmp_path: Path) -> None:
    from s0.run.lookup import MixedRunsError

    # neither is the paper's model with hub weights, so nothing selects them apart
    write_run(tmp_path, "tb", "main_qwen", "baseline", "tiny_qwen3_5", 0.0, weights="random")
    write_run(tmp_path, "rb", "main_qwen", "baseline", "qwen3_5_4b", 10.0, weights="random")
    with pytest.raises(MixedRunsError) as err:
        build_tables(load_records(tmp_path), only=["table1"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(
        "table1, column Qwen3.5-4B (GatedDeltaNet) (main_qwen): runs of"
    )
    assert "tiny_qwen3_5 (smoke)" in msg and "qwen3_5_4b (random weights)" in msg


# --------------------------------------------------------------------- degenerate statistics (issue 10)
EQUAL_DELTAS = {  # experiment -> (model, arms): every non-baseline arm gains exactly +10 pp on every seed
    "main_qwen": ("qwen3_5_4b", ["s0", "lora_r24_lr5e-4"]),
    "main_falcon": ("falcon_h1_7b", ["s0", "lora_r24_lr1e-4"]),
    "state_offset": ("qwen3_5_4b", ["s0", "state_offset_a0.07"]),
    "transfer_math500": ("qwen3_5_4b", ["s0"]),
    "transfer_gsm8k": ("qwen3_5_4b", ["s0"]),
    "scaling": ("qwen3_5_2b", ["s0"]),
    "prefix_control": ("qwen2_5_3b_instruct", ["prefix_lr1e-4", "prefix_lr1e-3", "prefix_lr1e-2"]),
}
TESTS = {  # (table, row, column) of every test (and interval) a table shows
    "table1": [("Welch p, S0 vs LoRA", "Qwen3.5-4B (GatedDeltaNet)"), ("Welch p, S0 vs LoRA", "FalconH1-7B (Mamba-2)")],
    "table3": [("State-offset", "Welch p vs. main LoRA")],
    "table_app_h": [("Qwen3.5-2B", "p (one-sample t)"), ("Qwen3.5-4B", "p (one-sample t)")],
    "table_transfer": [("MATH-500", "p (one-sample t)"), ("GSM8K", "p (one-sample t)")],
    "table_prefix": [],  # its 95% CI, row named by the number of configurations
}  # fmt: skip


def write_equal_deltas(root: Path, seeds: list[int], tiny: bool = False) -> Path:
    for exp, (model, arms) in EQUAL_DELTAS.items():
        model, weights = ("tiny_qwen3_5", "random") if tiny else (model, "hub")
        for seed in seeds:
            write_run(root, f"{exp}-{model}-b-{seed}", exp, "baseline", model, 50.0, seed, weights)
            for arm in arms:
                write_run(root, f"{exp}-{model}-{arm}-{seed}", exp, arm, model, 60.0, seed, weights)
    return root


@pytest.mark.parametrize(("seeds", "reason"), [([42, 7, 123], "zero variance"), ([42], "n=1")])
def test_equal_deltas_render_in_every_table_with_a_test(
    seeds: list[int], reason: str, tmp_path: Path
) -> None:
    res = load_records(write_equal_deltas(tmp_path, seeds))
    tables = {t.key: t for t in build_tables(res)}  # used to end in ZeroDivisionError
    for key, cells in TESTS.items():
        t = tables[key]
        want = f"n/a ({reason})"
        if key == "table_prefix":  # three equal configurations per seed pool into one interval
            cells, want = (
                [(f"All {3 * len(seeds)} configurations", "95% CI upper (pp)")],
                "n/a (zero variance)",
            )
        for row, column in cells:
            cell = t.cell(row, column)
            assert cell.ours() == want and cell.status == "undefined" and cell.run_ids, (
                key,
                row,
                cell.ours(),
            )
        assert want in t.to_markdown() and "nan" not in t.to_markdown().lower()
        assert want in t.to_latex() and want in t.to_html()
    paired = tables["table3"].cell("State-offset − S0 (paired t)", "Mean Δ (pp)")
    assert paired.ours().startswith(f"+0.0 pp, p n/a ({reason})")  # the estimate stands, the p-value cannot
    assert tables["table1"].cell("S0 (ours)", "Qwen3.5-4B (GatedDeltaNet)").mean == 60.0


def test_transfer_table_shows_the_authors_released_runs(per_seed: Results, ref: pd.DataFrame) -> None:
    """Sec 5.6 beside the authors' released per-seed files (results/reference/authors_released.csv, issue 12):
    MATH-500 +4.8 ± 1.4 (n=8), p ≈ 2.1e-5; GSM8K +2.8 ± 1.6 (n=10, mean 2.848), p ≈ 0.00026."""
    from s0.report.tables_appendix import table_transfer

    t = table_transfer(per_seed, ref)
    d, p = t.static["Authors' released: Δ (pp)"], t.static["Authors' released: p (one-sample t)"]
    assert d["MATH-500"] == "+4.8 ± 1.4 (n=8)" and p["MATH-500"].startswith("0.000021")
    assert d["GSM8K"] == "+2.8 ± 1.6 (n=10)" and p["GSM8K"].startswith("0.00026")
    assert d["Spider α = 0.07"] == "-2.3 (seed 42)" and p["Spider α = 0.07"] == "n/a (n=1)"
    assert "HumanEval → GSM8K" not in d  # the authors released no HumanEval-trained transfer runs
    assert "JackYoung27/s0-tuning@" in t.notes[-1] and "Authors' released" in t.to_markdown()


# ------------------------------------------------------------------------------- protocol fidelity (issue 12)
QWEN = "Qwen3.5-4B (GatedDeltaNet)"


def test_format_failures_from_completions_to_table1(tmp_path: Path) -> None:
    """Completions without the fence (prose where the body should be) or the box are format failures: the
    run's metrics record a nonzero format_failure and Table 1's caption shows it per arm."""
    from s0.run.pipeline import metrics_from
    from s0.tasks import get_task

    he = get_task("humaneval")
    ex = he.load_split("eval")[:2]
    prose = ["This function checks every element of the list and returns the answer.", ""]
    fenced = [f"```python\n{e.meta['canonical_solution']}```" for e in ex]
    base = metrics_from(he.score(ex, prose, workers=1, progress=False), [1], False)
    tuned = metrics_from(he.score(ex, fenced, workers=1, progress=False), [1], False)
    assert (base["format_failure"], base["pass@1"]) == (100.0, 0.0)  # a SyntaxError and an empty reply
    assert (tuned["format_failure"], tuned["pass@1"]) == (0.0, 100.0)
    math = get_task("math500")
    mx = math.load_split("eval")[:2]
    rows = math.score(mx, ["The answer is 5.", f"\\boxed{{{mx[1].gold}}}"], workers=1, progress=False)
    assert metrics_from(rows, [1], False)["format_failure"] == 50.0  # no box: no answer to grade

    for seed in (42, 7):
        write_run(tmp_path, f"b{seed}", "main_qwen", "baseline", "qwen3_5_4b", 0, seed, metrics=base)
        write_run(tmp_path, f"s{seed}", "main_qwen", "s0", "qwen3_5_4b", 0, seed, metrics=tuned)
        write_run(
            tmp_path, f"l{seed}", "main_qwen", "lora_r24_lr5e-4", "qwen3_5_4b", 40.0, seed
        )  # old record
    t1 = build_tables(load_records(tmp_path), only=["table1"])[0]
    assert (
        f"{QWEN}: baseline 100.0% (n=2), LoRA n/a (not recorded), S0 0.0% (n=2); FalconH1-7B (Mamba-2): —."
        in t1.full_caption
    )
    assert "Format failures" in t1.to_markdown() and "Format failures" in t1.to_latex()


def test_old_records_say_format_failures_were_not_recorded(fixtures: Results, ref: pd.DataFrame) -> None:
    caption = _tables(fixtures, ref)["table1"].full_caption
    assert f"{QWEN}: n/a (not recorded); FalconH1-7B (Mamba-2): n/a (not recorded)." in caption
    assert "0.0%" not in caption


def test_every_caption_names_the_protocol_of_its_runs(
    tmp_path: Path, fixtures: Results, ref: pd.DataFrame
) -> None:
    """Records without the field: "protocol: unrecorded"; recorded runs: their protocol; a table with cells of
    two protocols says both; the CSV has each cell's."""
    for key, table in _tables(fixtures, ref).items():
        if key == "table_expressiveness":  # no paper values, so no paper fixture runs
            assert "Run protocol: — (no runs)" in table.full_caption
            continue
        assert "Run protocol: unrecorded" in table.full_caption, key
    for seed in (42, 7):
        write_run(
            tmp_path, f"qb{seed}", "main_qwen", "baseline", "qwen3_5_4b", 50.0, seed, protocol="reference"
        )
        write_run(
            tmp_path,
            f"qs{seed}",
            "main_qwen",
            "s0",
            "qwen3_5_4b",
            70.0 + seed % 2,
            seed,
            protocol="reference",
        )
    t1, t7 = build_tables(load_records(tmp_path), only=["table1", "table7"])
    assert "Run protocol: reference (the authors' released practice" in t1.to_markdown()
    assert "Run protocol: — (no runs)." in t7.full_caption
    for seed in (42, 7):
        write_run(
            tmp_path, f"fb{seed}", "main_falcon", "baseline", "falcon_h1_7b", 40.0, seed, protocol="harness"
        )
    t1 = build_tables(load_records(tmp_path), only=["table1"])[0]
    assert "Run protocols: harness, reference; each cell reads runs of one" in t1.full_caption
    frame = t1.frame().set_index(["row", "column"])
    assert frame.loc[("Baseline", QWEN), "protocol"] == "reference"
    assert frame.loc[("Baseline", "FalconH1-7B (Mamba-2)"), "protocol"] == "harness"


def test_a_cell_that_would_mix_protocols_stops_the_build(tmp_path: Path) -> None:
    from s0.report.table_data import MixedProtocolsError

    write_run(tmp_path, "ref", "main_qwen", "baseline", "qwen3_5_4b", 50.0, protocol="reference")
    write_run(tmp_path, "har", "main_qwen", "baseline", "qwen3_5_4b", 40.0, protocol="harness")
    with pytest.raises(MixedProtocolsError) as err:
        build_tables(load_records(tmp_path), only=["table1"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"table1, cell 'Baseline' / '{QWEN}': runs of protocols ")
    assert "harness (run har), reference (run ref)" in msg
    write_run(
        tmp_path, "old", "main_qwen", "s0", "qwen3_5_4b", 60.0
    )  # unrecorded beside recorded: refused too
    write_run(tmp_path, "har", "main_qwen", "baseline", "qwen3_5_4b", 40.0, protocol="reference")
    with pytest.raises(MixedProtocolsError, match=r"reference .*unrecorded"):
        build_tables(load_records(tmp_path), only=["table1"])


def test_state_offset_alpha_is_selected_like_s0s(tmp_path: Path) -> None:
    """conf/experiment/state_offset.yaml sweeps alpha 0.07, 0.3, 1.0; Tables 1 and 3 use the arm with the highest
    mean pass@1 over seeds and Table 3's caption says which alpha and why."""
    from s0.report.tables import experiment_arms

    assert selection_arms("state_offset") == ["state_offset_a0.07", "state_offset_a0.3", "state_offset_a1.0"]
    assert {a: experiment_arms("state_offset")[a]["alpha"] for a in selection_arms("state_offset")} == {
        "state_offset_a0.07": 0.07, "state_offset_a0.3": 0.3, "state_offset_a1.0": 1.0,
    }  # fmt: skip
    for seed in (42, 7, 123):
        write_run(tmp_path, f"b{seed}", "state_offset", "baseline", "qwen3_5_4b", 50.0, seed)
        write_run(tmp_path, f"s{seed}", "state_offset", "s0", "qwen3_5_4b", 70.0 + seed % 3, seed)
        for arm, gain in (
            ("state_offset_a0.07", 5.0),
            ("state_offset_a0.3", 25.0),
            ("state_offset_a1.0", 15.0),
        ):
            write_run(
                tmp_path, f"{arm}-{seed}", "state_offset", arm, "qwen3_5_4b", 50.0 + gain + seed % 2, seed
            )
    t1, t3 = build_tables(load_records(tmp_path), only=["table1", "table3"])
    assert t3.cell("State-offset", "Mean Δ (pp)").mean == pytest.approx(25.0 + 2 / 3)
    assert t3.cell("State-offset", "Mean Δ (pp)").run_ids == sorted(
        [f"state_offset_a0.3-{s}" for s in (42, 7, 123)] + [f"b{s}" for s in (42, 7, 123)]
    )
    assert t1.cell("State-offset", QWEN).mean == pytest.approx(75.0 + 2 / 3)
    assert "State-offset is α = 0.3 (state_offset_a0.3)" in t3.full_caption
    assert "the highest mean pass@1 over seeds on the evaluated problems" in t3.full_caption
    assert t3.notes[-1].startswith("State-offset (selected α) is state_offset_a0.3, the highest mean pass@1 of the "
                                   "3 of 3 state-offset arms with runs (state_offset_a0.07 55.7 (3 seeds)")  # fmt: skip


def test_weak_sandbox_runs_are_marked_in_every_table_built_from_them(tmp_path: Path) -> None:
    """A run graded in weak isolation (provenance.json sandbox.weak, issue 14) is counted in the caption of each
    table it reaches, and in the CSV's cells; tables without such runs say nothing."""
    from s0.run import records

    for seed in (42, 7):
        write_run(tmp_path, f"b{seed}", "main_qwen", "baseline", "qwen3_5_4b", 50.0, seed)
        write_run(tmp_path, f"s{seed}", "main_qwen", "s0", "qwen3_5_4b", 70.0 + seed % 2, seed)
    records.write_json(tmp_path / "s42" / "provenance.json", {"sandbox": {"isolation": "weak", "weak": True}})
    records.write_json(
        tmp_path / "b7" / "provenance.json", {"sandbox": {"isolation": "required", "weak": False}}
    )
    tables = {t.key: t for t in build_tables(load_records(tmp_path))}
    t1 = tables["table1"]
    assert "sandbox: weak isolation (1 run)" in t1.full_caption
    assert "sandbox: weak isolation (1 run)" in t1.to_markdown() and "weak isolation (1 run)" in t1.to_html()
    frame = t1.frame().set_index(["row", "column"])
    assert frame.loc[("S0 (ours)", QWEN), "sandbox_weak_runs"] == 1
    assert frame.loc[("Baseline", QWEN), "sandbox_weak_runs"] == 0
    assert "weak isolation" in tables["table2"].full_caption  # its S0 Δ reads s42
    assert "weak isolation" not in tables["table7"].full_caption  # no runs of main_falcon
