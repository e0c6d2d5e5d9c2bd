"""The report: verdicts per claim from the tables, every table and figure on the page, the runs behind each
number, and the three CLIs. The slow test runs the real tiny-model pipeline end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from s0.report.page import (
    CLAIMS,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    judge_claims,
    report_html,
    report_markdown,
)
from s0.report.tables import build_tables, load_records
from s0.run.mechanism import load_analyses
from s0.run.records import Results

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="module")
def paper():
    res = load_records(FIXTURES / "paper_records", FIXTURES / "paper_summaries")
    tables = build_tables(res, load_analyses(FIXTURES / "paper_records"))
    return res, tables


def test_paper_values_reproduce_every_claim_they_cover(paper) -> None:
    _, tables = paper
    verdicts = judge_claims({t.key: t for t in tables})
    assert len(verdicts) == len(CLAIMS)
    by = {v.verdict for v in verdicts}
    assert NOT_REPRODUCED not in by, [v.claim for v in verdicts if v.verdict == NOT_REPRODUCED]
    not_run = [v.claim for v in verdicts if v.verdict == NOT_RUN]
    assert len(not_run) == 2 and all("alpha" in c or "α" in c for c in not_run)  # App E prints too few points
    assert all(v.run_ids for v in verdicts if v.verdict == REPRODUCED)


def test_nothing_run_means_not_run_and_a_worse_s0_is_not_reproduced(paper) -> None:
    empty = build_tables(Results(pd.DataFrame(), pd.DataFrame()))
    assert {v.verdict for v in judge_claims({t.key: t for t in empty})} == {NOT_RUN}
    res, _ = paper
    m = res.metrics.copy()
    s0 = (m.experiment == "main_qwen") & (m.arm == "s0") & (m.metric == "pass@1")
    m.loc[s0, "value"] -= 15.0  # S0 now below LoRA on Qwen
    worse = build_tables(Results(m, res.samples), only=["table1"])
    v = judge_claims({t.key: t for t in worse})
    assert [x.verdict for x in v[:2]] == [NOT_REPRODUCED, NOT_REPRODUCED]  # +23.6 pp, and S0 beats LoRA


def test_tiny_runs_judge_no_claim_and_mixed_models_stop_the_report(tmp_path: Path, capsys) -> None:
    import make_report
    import make_tables

    from tests.test_tables import write_run

    write_run(tmp_path, "tb", "main_qwen", "baseline", "tiny_qwen3_5", 0.0, weights="random")
    write_run(tmp_path, "ts", "main_qwen", "s0", "tiny_qwen3_5", 30.0, weights="random")
    tables = build_tables(load_records(tmp_path))
    verdicts = judge_claims({t.key: t for t in tables})
    assert {v.verdict for v in verdicts} == {NOT_RUN}  # a tiny model's +30 pp says nothing about the paper
    write_run(tmp_path, "rb", "main_qwen", "baseline", "qwen3_5_4b", 40.0, weights="hub")
    md = report_markdown(tables, verdicts, [], load_records(tmp_path), [str(tmp_path)])
    assert "main_qwen: read runs of qwen3_5_4b; left out runs of tiny_qwen3_5 (smoke)" in md
    write_run(tmp_path, "xb", "main_qwen", "baseline", "qwen3_5_4b", 40.0, weights="random")
    (tmp_path / "rb" / "done").unlink()  # now two scopes and neither is the paper's
    out = tmp_path / "out"
    for cli in (make_tables, make_report):
        assert (
            cli.main(
                [
                    "--results",
                    str(tmp_path),
                    "--out",
                    str(out),
                    *(["--no-figures"] if cli is make_report else []),
                ]
            )
            == 1
        )
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("error: table1, ") and "tiny_qwen3_5 (smoke)" in err


@pytest.mark.parametrize("tiny", [False, True])
def test_equal_deltas_render_in_the_report(tiny: bool, tmp_path: Path) -> None:
    """`make report` on smoke results used to end in ZeroDivisionError (every delta equal)."""
    import make_report

    from s0.report.figures import fig1
    from tests.test_tables import write_equal_deltas

    runs, out = write_equal_deltas(tmp_path / "runs", [42, 7, 123], tiny=tiny), tmp_path / "out"
    assert make_report.main(["--results", str(runs), "--out", str(out), "--models", "tiny_qwen3_5"]) == 0
    md = (out / "report.md").read_text()
    assert "n/a (zero variance)" in md and "nan" not in md.lower()
    assert "n/a (zero variance)" in (out / "report.html").read_text()
    verdicts = pd.read_csv(out / "verdicts.csv")
    assert set(verdicts.verdict) <= {NOT_RUN, NOT_REPRODUCED, REPRODUCED}
    gsm = verdicts[verdicts.claim.str.startswith("GSM8K")].iloc[0]
    assert gsm.verdict == NOT_RUN and "n/a (zero variance)" in gsm.ours  # p undefined: not judged either way
    bracket = [t.get_text() for t in fig1(load_records(runs)).axes[0].texts]
    assert "n/a (zero variance)" in bracket and "n.s." not in bracket  # an undefined test is not "n.s."


def test_page_has_every_table_figure_and_run(paper) -> None:
    res, tables = paper
    verdicts = judge_claims({t.key: t for t in tables})
    figs = ["fig1.png", "fig2_qwen3_5_4b.png", "fig3.png", "fig4.png"]
    md = report_markdown(tables, verdicts, figs, res, ["tests/fixtures/paper_records"])
    for t in tables:
        assert t.title in md
    for f in figs:
        assert f"]({f})" in md
    assert "qwen4b-lora_r64-s256" in md and "| **reproduced** |" in md
    html = report_html(tables, verdicts, figs, res, ["x"])
    assert html.startswith("<!doctype html>") and html.count("<table>") == len(tables) + 1
    assert "title='runs: " in html and "class='reproduced'" in html


def test_clis_write_every_artifact(tmp_path: Path) -> None:
    import make_figures
    import make_report
    import make_tables

    assert make_tables.main(["--paper-fixtures", "--out", str(tmp_path), "--only", "table2", "table7"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"table{k}.{e}" for k in (2, 7) for e in ("csv", "md", "tex")
    ]
    assert (
        make_figures.main(
            ["--paper-fixtures", "--out", str(tmp_path), "--only", "fig2", "--models", "tiny_qwen3_5"]
        )
        == 0
    )
    assert (tmp_path / "fig2_tiny_qwen3_5.pdf").exists() and (tmp_path / "fig2_tiny_qwen3_5.png").exists()
    assert make_report.main(["--paper-fixtures", "--out", str(tmp_path), "--no-figures"]) == 0
    assert {"report.md", "report.html", "verdicts.csv", "table1.tex", "table_sec6.csv"} <= {
        p.name for p in tmp_path.iterdir()
    }
    with pytest.raises(SystemExit):
        make_tables.main(["--only", "table4"])  # Table 4 is hyperparameters, not results


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path) -> None:
    """Tiny models through the real runner, the mechanism script, and the report (about 3 minutes on CPU)."""
    res_dir, cache = tmp_path / "runs", tmp_path / "cache"
    common = ["debug=smoke", "seed=42", f"paths.results={res_dir}", f"paths.cache={cache}"]
    for args in (
        ["experiment=mechanism"],
        ["experiment=main_falcon", "arm=s0"],
        ["experiment=main_falcon", "arm=baseline"],
    ):
        subprocess.run([sys.executable, "run.py", *args, *common], cwd=ROOT, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "scripts/mechanism.py", "--results", str(res_dir), "--max-prompts", "2",
                          "--folds", "2"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    a = load_analyses(res_dir)
    assert {"persistence", "divergence"} <= set(a.analysis)
    import make_report

    assert (
        make_report.main(
            ["--results", str(res_dir), "--out", str(tmp_path / "out"), "--models", "tiny_qwen3_5"]
        )
        == 0
    )
    md = (tmp_path / "out" / "report.md").read_text()
    assert "fig1.png" in md and "Table 1" in md


def write_demo_runs(out: Path) -> None:
    """Finished records under the run ids the demo plans (as if `make demo` had run), without running."""
    import demo

    from s0.run import records

    planned = demo.planned_run_ids(out, [42, 7])
    models = {"main_qwen": "tiny_qwen3_5", "main_falcon": "tiny_falcon_h1"}
    for experiment, runs in planned.items():
        for run_id, arm, seed in runs:
            d = out / "runs" / run_id
            method = "lora" if arm.startswith("lora") else arm
            records.write_json(d / "run.json", {
                "experiment": experiment, "arm": arm, "seed": seed,
                "model": {"name": models[experiment], "family": "x", "weights": "random"},
                "method": {"name": method, "r": 24}, "task": {"name": "humaneval"},
                "eval_task": {"name": "humaneval"}, "eval": {"mode": "greedy"}, "smoke": True})  # fmt: skip
            records.write_json(d / "metrics.json", {"pass@1": 0.0, "n_eval": 4.0})
            records.write_jsonl(d / "samples.jsonl", [])
            records.add_membership(d, experiment, arm)
            records.mark_done(d, {})


def test_demo_rerun_starts_no_runner_and_then_does_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    """Every planned run finished: the demo builds Table 1 and Figure 1 without starting run.py (no model
    load), prints each path it wrote; a second call finds nothing changed and only prints them again."""
    import demo

    write_demo_runs(tmp_path)
    monkeypatch.setattr(demo.subprocess, "run", lambda *a, **k: pytest.fail(f"started {a}"))
    assert demo.main(["--out", str(tmp_path)]) == 0
    first = capsys.readouterr().out
    assert "main_qwen: 6 of 6 runs already finished" in first and "main_falcon: 6 of 6" in first
    assert (
        "tiny_qwen3_5 (smoke): LoRA (best config) is lora_r24_lr5e-4 (2 seeds), the only one of the 4"
        in first
    )
    lines = first.split("The demo wrote:")[1].splitlines()
    for name in ("runs", "table1.md", "table1.tex", "table1.csv", "fig1.png", "fig1.pdf", "demo.json"):
        assert any(line.strip().endswith(str(tmp_path / name)) for line in lines), name
        assert (tmp_path / name).exists()
    assert "tiny_qwen3_5 and tiny_falcon_h1, random weights" in first
    built = (tmp_path / "fig1.png").stat().st_mtime_ns
    assert demo.main(["--out", str(tmp_path)]) == 0
    second = capsys.readouterr().out
    assert second.startswith("Nothing to do") and str(tmp_path / "fig1.png") in second
    assert (tmp_path / "fig1.png").stat().st_mtime_ns == built
    (tmp_path / "runs" / next(iter(demo.done_runs(tmp_path / "runs"))) / "done").unlink()  # a run redone
    monkeypatch.setattr(demo.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1))
    assert demo.main(["--out", str(tmp_path)]) == 1  # not current: the runner is asked again


def test_claims_on_tiny_runs_name_them_and_judge_nothing(tmp_path: Path) -> None:
    """The demo's runs: Table 1's claims find their cells under the tiny model's column and say whose runs
    they are ("not run" for the paper's model), rather than "—" with no runs."""
    from tests.test_figures import write_zero_demo

    res = load_records(write_zero_demo(tmp_path))
    verdicts = judge_claims({t.key: t for t in build_tables(res, only=["table1"])})
    first = verdicts[0]  # S0 improves Qwen3.5-4B ... (Table 1's S0 delta)
    assert first.verdict == NOT_RUN and first.ours.startswith("only runs of tiny_qwen3_5 (smoke): +0.0")
    assert len(first.run_ids) == 4  # two seeds of baseline and S0
    falcon = verdicts[2]
    assert falcon.verdict == NOT_RUN and "tiny_falcon_h1 (smoke)" in falcon.ours and falcon.run_ids
