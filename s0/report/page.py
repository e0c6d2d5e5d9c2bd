"""The reproduction report: every table and figure on one Markdown (and HTML) page, a verdict per claim of
the paper, and the runs behind each number.

    tables = build_tables(res, analyses)
    verdicts = judge_claims({t.key: t for t in tables})
    write_report(out_dir, tables, verdicts, figures=["fig1.png", ...], sources=[...], res=res)

A claim is `reproduced` when our records meet its rule (stated beside it), `not reproduced` when they do not,
and `not run` when a record it needs is missing. Rules follow the paper's own wording: a stated threshold
(p < 0.001) is used as stated; a magnitude is compared with the agreement rule of s0.report.table_core.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from s0.report.table_core import Cell, Table, esc
from s0.run.lookup import MixedRunsError, scope_notes
from s0.run.records import Results

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"
Q, F = "Qwen3.5-4B (GatedDeltaNet)", "FalconH1-7B (Mamba-2)"


@dataclass
class Verdict:
    claim: str
    source: str
    rule: str
    verdict: str
    ours: str
    run_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Claim:
    claim: str
    source: str
    rule: str
    cells: list[tuple[str, str, str]]  # (table, row, column) the rule reads; any missing -> not run
    test: Callable[[list[Cell]], bool]


def _v(c: Cell) -> float:
    return c.mean


CLAIMS = [
    Claim("S0 improves Qwen3.5-4B greedy HumanEval pass@1 by +23.6 ± 1.7 pp (10 seeds)", "Sec 5.1, Table 1",
          "Δ agrees with +23.6 within the seed spread", [("table1", "S0 Δ vs baseline (pp)", Q)],
          lambda c: c[0].status == "agree"),
    Claim("S0 beats the best LoRA on Qwen3.5-4B by +10.8 pp, p < 0.001 (Welch, 10 seeds)", "Sec 5.1",
          "S0 − LoRA > 0 and Welch p < 0.001",
          [("table1", "S0 − LoRA (pp)", Q), ("table1", "Welch p, S0 vs LoRA", Q)],
          lambda c: _v(c[0]) > 0 and _v(c[1]) < 0.001),
    Claim("FalconH1-7B: S0 71.8% ± 1.3 is statistically indistinguishable from LoRA 71.4% ± 2.4 (3 seeds)",
          "Sec 5.1, Table 1", "Welch p ≥ 0.05 and S0 pass@1 agrees with 71.8",
          [("table1", "Welch p, S0 vs LoRA", F), ("table1", "S0 (ours)", F)],
          lambda c: _v(c[0]) >= 0.05 and c[1].status == "agree"),
    Claim("Parameter-matched LoRA (r64, 12.6M) degrades by −15.5 ± 18.9 pp, 8/10 seeds negative", "Sec 5.2, Table 2",
          "mean Δ < 0 and at least half the seeds negative",
          [("table2", "LoRA r64", "Mean Δ (pp)"), ("table2", "LoRA r64", "Seeds negative")],
          lambda c: _v(c[0]) < 0 and _v(c[1]) >= c[0].n / 2),
    Claim("State-offset reaches +27.1 pp, above S0 (paired rerun) and LoRA (p < 0.001)", "Sec 5.5, Table 3",
          "paired state-offset − S0 > 0 and Welch p vs LoRA < 0.001",
          [("table3", "State-offset − S0 (paired t)", "Mean Δ (pp)"), ("table3", "State-offset", "Welch p vs. main LoRA")],
          lambda c: _v(c[0]) > 0 and _v(c[1]) < 0.001),
    Claim("Gains grow with scale: +2.6 (0.8B), +19.0 (2B), +23.6 (4B), +44.0 pp (9B)", "Sec 5.4, Fig 3a, App H",
          "Δ strictly increases from 0.8B to 9B",
          [("table_app_h", f"Qwen3.5-{s}", "Δ (pp)") for s in ("0.8B", "2B", "4B", "9B")],
          lambda c: all(_v(a) < _v(b) for a, b in itertools.pairwise(c))),
    Claim("MATH-500 transfer: +4.8 ± 1.4 pp, p = 0.00002 (8 seeds)", "Sec 5.6", "Δ > 0 and one-sample p < 0.001",
          [("table_transfer", "MATH-500", "Δ (pp)"), ("table_transfer", "MATH-500", "p (one-sample t)")],
          lambda c: _v(c[0]) > 0 and _v(c[1]) < 0.001),
    Claim("GSM8K transfer: +2.8 ± 1.6 pp, p = 0.0003 (10 seeds)", "Sec 5.6", "Δ > 0 and one-sample p < 0.001",
          [("table_transfer", "GSM8K", "Δ (pp)"), ("table_transfer", "GSM8K", "p (one-sample t)")],
          lambda c: _v(c[0]) > 0 and _v(c[1]) < 0.001),
    Claim("Spider text-to-SQL shows no transfer (+0.0 pp at five alphas)", "Sec 5.6",
          "every alpha's Δ agrees with 0 within one run's binomial noise",
          [("table_transfer", f"Spider α = {a}", "Δ (pp)") for a in ("0.03", "0.05", "0.07", "0.1", "0.15")],
          lambda c: all(x.status == "agree" for x in c)),
    Claim("FalconH1 needs its own alpha: 0.07 gives +8.3 pp, 0.60–0.70 reach 71.8%, α = 2.0 falls below baseline",
          "Sec 5.7, Fig 3b, App E", "pass@1(0.65) > pass@1(0.07) and pass@1(2.0) < baseline",
          [("table_app_e_falcon", r, "pass@1 (%)") for r in ("α = 0.07", "α = 0.65", "α = 2", "Baseline")],
          lambda c: _v(c[1]) > _v(c[0]) and _v(c[2]) < _v(c[3])),
    Claim("On Qwen3.5, α from 0.03 to 0.15 all give +30 to +34 pp sampled gains", "App E",
          "every alpha's sampled Δ agrees with the printed range",
          [("table_app_e_qwen", f"α = {a}", "Sampled Δ (pp)") for a in ("0.03", "0.05", "0.07", "0.1", "0.15")],
          lambda c: all(x.status == "agree" for x in c)),
    Claim("Prefix tuning on a pure Transformer degrades by −13.9 pp, all 9 configurations negative", "Sec 5.8",
          "pooled Δ < 0 and every configuration negative",
          [("table_prefix", "All 9 configurations", "Δ (pp)")],
          lambda c: _v(c[0]) < 0 and max(c[0].values) < 0),
    Claim("Layer groups: early > middle > late (+23.8 > +19.0 > +13.1 pp)", "App B, Table 5",
          "Δ(early) > Δ(middle) > Δ(late)",
          [("table5", r, "Greedy Δ (pp)") for r in ("Early (0–7)", "Middle (8–15)", "Late (16–23)")],
          lambda c: _v(c[0]) > _v(c[1]) > _v(c[2])),
    Claim("25 verified solutions suffice: +22.6 pp at 25 and at 50; 10 already gain +25.4", "App D",
          "Δ(10) > 0 and Δ(25), Δ(50) within 2 standard errors of each other",
          [("table_app_d", f"{n} solutions", "Δ (pp)") for n in (10, 25, 50)],
          lambda c: _v(c[0]) > 0 and abs(_v(c[1]) - _v(c[2])) <= 2 * _se(c[1], c[2])),
    Claim("pass@k: S0 beats LoRA at every k (pass@10 88.5% vs 66.7%); LoRA's pass@5 ties the baseline",
          "Sec 5.1, App G, Table 9", "S0 > LoRA at k = 1, 5, 10 and |LoRA − baseline| at k=5 within 2 s.e.",
          [("table9", r, k) for r in ("S0 (12.6M)", "LoRA (r24, 4.7M)") for k in ("pass@1", "pass@5", "pass@10")]
          + [("table9", "Baseline", "pass@5")],
          lambda c: all(_v(c[i]) > _v(c[i + 3]) for i in range(3)) and abs(_v(c[4]) - _v(c[6])) <= 2 * _se(c[4], c[6])),
    Claim("S0's direct influence decays to 0.03% KL ratio by the last prompt token", "Sec 6.2",
          "median final KL ratio < 0.3% (within 10× of the paper)",
          [("table_sec6", "KL ratio at the last prompt token", "Value")], lambda c: _v(c[0]) < 0.3),
    Claim("85% of FAIL-to-PASS flips diverge at the first character; all within the first 10% (p < 1e-8)",
          "Sec 6.3, Fig 1b, Fig 4", "most flips diverge at character 0 and the one-sided sign test gives p < 0.001",
          [("table_sec6", "FAIL-to-PASS flips", "Value"), ("table_sec6", "… diverging at character 0", "Value"),
           ("table_sec6", "Sign test p (first 10%, one-sided)", "Value")],
          lambda c: _v(c[1]) > _v(c[0]) / 2 and _v(c[2]) < 0.001),
    Claim("A linear probe reads correctness from the recurrent state at least as well as from the residual stream "
          "(AUC 0.93 vs 0.90)", "Sec 6.4, App H", "best recurrent AUC ≥ best residual AUC − 0.01",
          [("table_sec6", "Probe AUC, recurrent state", "Value"), ("table_sec6", "Probe AUC, residual stream", "Value")],
          lambda c: _v(c[0]) >= _v(c[1]) - 0.01),
]  # fmt: skip


def _se(a: Cell, b: Cell) -> float:
    parts = [(c.std or 0.0) ** 2 / max(c.n, 1) for c in (a, b)]
    return math.sqrt(sum(parts)) or 1e-9


def judge_claims(tables: dict[str, Table]) -> list[Verdict]:
    """One Verdict per claim in CLAIMS, from the built tables."""
    out = []
    for cl in CLAIMS:
        cells = []
        for key, row, col in cl.cells:
            try:
                cells.append(tables[key].cell(row, col))
            except KeyError:
                cells.append(None)
        models = sorted({m for c in cells if c is not None for m in c.models})
        if any(c is None or not (c.values or c.undefined) for c in cells):
            verdict, ours = NOT_RUN, "—"
        else:
            ours = "; ".join(c.ours(with_n=False) for c in cells)
            if models:  # the paper's model was not run: other models' numbers judge nothing
                verdict, ours = NOT_RUN, f"only runs of {', '.join(models)}: {ours}"
            elif any(c.undefined for c in cells):  # runs exist, but the rule's statistic is undefined on them
                verdict = NOT_RUN
            else:
                verdict = REPRODUCED if cl.test(cells) else NOT_REPRODUCED
        ids = sorted({r for c in cells if c is not None for r in c.run_ids})
        out.append(Verdict(cl.claim, cl.source, cl.rule, verdict, ours, ids))
    return out


# ------------------------------------------------------------------------------------------- rendering
def _runs_line(ids: list[str], limit: int = 12) -> str:
    if not ids:
        return "no runs"
    shown = ", ".join(f"`{r}`" for r in ids[:limit])
    return shown + (
        f" and {len(ids) - limit} more (full list in the table's CSV)" if len(ids) > limit else ""
    )


def _header(res: Results, sources: list[str]) -> list[str]:
    n = res.metrics.run_id.nunique() if len(res.metrics) else 0
    lines = [f"Built from {', '.join(f'`{s}`' for s in sources)}: {n} finished runs"]
    if res.unfinished:
        lines[-1] += f", {len(res.unfinished)} unfinished (ignored)"
    if res.corrupt:
        lines[-1] += f", {len(res.corrupt)} unreadable (ignored: {', '.join(sorted(res.corrupt))})"
    lines += [f"- {note}" for note in scope_notes(res.metrics)]
    return lines


def report_markdown(tables: list[Table], verdicts: list[Verdict], figures: list[str], res: Results,
                    sources: list[str]) -> str:  # fmt: skip
    counts = {v: sum(x.verdict == v for x in verdicts) for v in (REPRODUCED, NOT_REPRODUCED, NOT_RUN)}
    md = ["# S0 Tuning (arXiv 2604.01168): reproduction report", "", *_header(res, sources), "",
          f"**Claims: {counts[REPRODUCED]} reproduced, {counts[NOT_REPRODUCED]} not reproduced, "
          f"{counts[NOT_RUN]} not run.**", "", "## Verdict per claim", "",
          "| # | Claim | Source | Rule | Ours | Verdict | Runs |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, v in enumerate(verdicts, 1):
        cl, rule, ours = (x.replace("|", "\\|") for x in (v.claim, v.rule, v.ours))
        md.append(f"| {i} | {cl} | {v.source} | {rule} | {ours} | **{v.verdict}** | "
                  f"{len(v.run_ids)} |")  # fmt: skip
    md += ["", "## Tables", "",
           "Each cell puts the paper's number beside ours with the seed count; ✓/✗ mark agreement within the "
           "seed spread (2 standard errors of the difference plus the paper's rounding; the binomial noise of "
           "one evaluation when there is a single run), — a missing run.", ""]  # fmt: skip
    for t in tables:
        md += [t.to_markdown(), f"Runs behind this table: {_runs_line(t.run_ids)}", ""]
    md += ["## Figures", ""]
    md += [f"![{Path(f).stem}]({f})\n" for f in figures]
    md += ["## Runs behind each verdict", ""]
    for i, v in enumerate(verdicts, 1):
        md.append(f"{i}. {v.claim}: {_runs_line(v.run_ids, 40)}")
    return "\n".join(md) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}td.paper{color:#555}td.ok{background:#e8f6ec}td.bad{background:#fde8e8}
td.miss{color:#999}.cap{font-size:13px;color:#444}.note{font-size:12px;color:#555}img{max-width:100%}
.reproduced{color:#17803d;font-weight:600}.not-reproduced{color:#b00020;font-weight:600}.not-run{color:#888}"""


def report_html(tables: list[Table], verdicts: list[Verdict], figures: list[str], res: Results,
                sources: list[str]) -> str:  # fmt: skip
    h = ["<!doctype html><html><head><meta charset='utf-8'><title>S0 Tuning reproduction report</title>",
         f"<style>{CSS}</style></head><body>", "<h1>S0 Tuning (arXiv 2604.01168): reproduction report</h1>"]  # fmt: skip
    h += [f"<p>{esc(line.replace('`', ''))}</p>" for line in _header(res, sources)]
    h += ["<h2>Verdict per claim</h2><table><tr><th>#</th><th>Claim</th><th>Source</th><th>Rule</th><th>Ours</th>"
          "<th>Verdict</th><th>Runs</th></tr>"]  # fmt: skip
    for i, v in enumerate(verdicts, 1):
        runs = (
            f"<details><summary>{len(v.run_ids)}</summary>{esc(', '.join(v.run_ids))}</details>"
            if v.run_ids
            else "0"
        )
        h.append(f"<tr><td>{i}</td><td>{esc(v.claim)}</td><td>{esc(v.source)}</td><td>{esc(v.rule)}</td>"
                 f"<td>{esc(v.ours)}</td><td class='{v.verdict.replace(' ', '-')}'>{v.verdict}</td><td>{runs}</td></tr>")  # fmt: skip
    h += ["</table>", "<h2>Tables</h2><p class='cap'>Hover over a value for the runs behind it. Green: agrees with "
          "the paper within the seed spread; red: differs beyond it; — a missing run.</p>"]  # fmt: skip
    for t in tables:
        h.append(t.to_html())
        h.append(
            f"<details class='note'><summary>runs ({len(t.run_ids)})</summary>{esc(', '.join(t.run_ids))}</details>"
        )
    h.append("<h2>Figures</h2>")
    h += [f"<figure><img src='{esc(f)}' alt='{esc(Path(f).stem)}'><figcaption>{esc(Path(f).stem)}</figcaption></figure>"
          for f in figures]  # fmt: skip
    h.append("</body></html>")
    return "\n".join(h) + "\n"


def write_report(out_dir: str | Path, tables: list[Table], verdicts: list[Verdict], figures: list[str],
                 res: Results, sources: list[str]) -> tuple[Path, Path]:  # fmt: skip
    """report.md and report.html in `out_dir` (figure paths relative to it), plus verdicts.csv."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, html = out / "report.md", out / "report.html"
    md.write_text(report_markdown(tables, verdicts, figures, res, sources))
    html.write_text(report_html(tables, verdicts, figures, res, sources))
    rows = [{"claim": v.claim, "source": v.source, "rule": v.rule, "verdict": v.verdict, "ours": v.ours,
             "run_ids": ";".join(v.run_ids)} for v in verdicts]  # fmt: skip
    pd.DataFrame(rows).to_csv(out / "verdicts.csv", index=False)
    return md, html


# ------------------------------------------------------------------------------------------------- CLI
ROOT = Path(__file__).resolve().parents[2]
FIXTURE_DIRS = [
    ROOT / "tests" / "fixtures" / "paper_records",
    ROOT / "tests" / "fixtures" / "paper_summaries",
]


def run_cli(body: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """A make_{tables,figures,report} entry point: runs of different models that would pool stop it with one
    line on stderr and exit code 1, not a traceback."""
    import sys

    try:
        return body(argv)
    except MixedRunsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def add_io_args(parser) -> None:
    """--results / --out / --paper-fixtures / --only, shared by scripts/make_{tables,figures,report}.py."""
    parser.add_argument("--results", nargs="+", default=["results/runs"], help="results directories to read")
    parser.add_argument("--out", default=None, help="output directory (default paper_figures/)")
    parser.add_argument("--paper-fixtures", action="store_true",
                        help="build from the paper's own values (tests/fixtures/paper_records and paper_summaries) "
                             "into paper_figures/paper_fixtures/ unless --out is given")  # fmt: skip
    parser.add_argument("--only", nargs="+", default=None, help="artifact keys to build (default: all)")


def load_inputs(args) -> tuple[Results, pd.DataFrame, list[str], Path]:
    """(records, analysis records, source names, output directory) for the parsed CLI arguments."""
    from s0.report.tables import load_records
    from s0.run.mechanism import load_analyses

    dirs = FIXTURE_DIRS if args.paper_fixtures else [Path(d) for d in args.results]
    out = Path(args.out or ("paper_figures/paper_fixtures" if args.paper_fixtures else "paper_figures"))
    res = load_records(*dirs)
    analyses = pd.concat([load_analyses(d) for d in dirs], ignore_index=True)
    sources = [
        str(d.relative_to(ROOT)) if d.is_absolute() and d.is_relative_to(ROOT) else str(d) for d in dirs
    ]
    return res, analyses, sources, out
