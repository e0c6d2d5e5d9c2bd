"""Building blocks of the paper tables: compared cells, record look-ups, and the three renderers.

A table is a list of `Cell`s, one per (row, column) the paper prints a number in. Each cell holds the
paper's number (`PaperRef`, read from results/reference/paper_values.csv) and our per-seed values with the
run ids behind them, and knows whether the two agree:

    status    meaning
    agree     |ours - paper| <= tolerance (below)
    disagree  beyond it: the cell is marked ✗
    missing   no finished run: shown as "—", never as 0
    info      shown side by side, not judged (per-seed rows: a reproduction's seed 42 is not the paper's)
    no paper  the paper prints nothing here (our extra rows and columns)
    n/a       the paper marks the cell not applicable (state-offset on FalconH1)
    undefined runs exist but the statistic is not defined on them: "n/a (zero variance)", "n/a (n=1)"

Tolerance ("beyond the seed spread"): 2 standard errors of the difference of the two means plus half a unit
of the paper's last printed digit, se^2 = s_ours^2/n_ours + s_paper^2/n_paper. A side without a spread of its
own (a single run; a paper value printed without a std) borrows the other side's per-seed std, and a paper
seed count the text does not give counts as 1 (the cautious choice). When neither side has a spread
(single-seed experiments) it is the binomial noise of one evaluation of a pass rate on the n_eval problems,
for two runs: se = 100 * sqrt(2 p (1 - p) / n_eval). A printed range (+30 to +34) or bound (< 40.5) widens by the same
tolerance. p-values agree when both sides fall on the same side of 0.05.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from s0.report.reference import paper_rows, rounding_halfwidth
from s0.report.table_data import (
    DEFAULT_N_EVAL,
    MixedProtocolsError,
    models_of,
    n_eval_of,
    protocol_by_run,
    run_ids_of,
    weak_runs,
)
from s0.stats import TestResult, format_pvalue, stars

MARK = {"agree": "✓", "disagree": "✗"}
DASH = "—"


# ----------------------------------------------------------------------------------------- paper numbers
# Tables look numbers up a few hundred times; comparing numpy columns is ~50x faster than pandas masks. The
# frame is kept in the cache beside its columns so its id cannot be reused while the entry lives.
_COLUMNS: dict[int, tuple[pd.DataFrame, dict[str, np.ndarray]]] = {}


def _paper_rows(ref: pd.DataFrame, **filters: object) -> pd.DataFrame:
    """s0.report.reference.paper_rows, on cached numpy columns (same semantics: values compared as CSV text)."""
    if id(ref) not in _COLUMNS:
        if len(_COLUMNS) > 8:
            _COLUMNS.clear()
        _COLUMNS[id(ref)] = (ref, {c: ref[c].to_numpy() for c in ref.columns if c != "value"})
    cols = _COLUMNS[id(ref)][1]
    mask = np.ones(len(ref), dtype=bool)
    for col, want in filters.items():
        if col not in cols:
            return paper_rows(ref, **filters)  # let the reference module raise its own error
        mask &= cols[col] == str(want)
    return ref.iloc[np.flatnonzero(mask)]


@dataclass(frozen=True)
class PaperRef:
    """One printed number (or mean ± std, range, bound) of the paper, as a table cell compares against it."""

    value: float | None = None
    std: float | None = None
    n: int | None = None  # seeds behind a printed std
    printed: str = ""  # shown in the Paper column as is
    relation: str = "="  # '=', '~', '<', '>', '>=', or 'range' (lo..hi)
    lo: float | None = None
    hi: float | None = None
    halfwidth: float = 0.05  # half a unit of the last printed digit


def paper_ref(
    ref: pd.DataFrame,
    kind: str = "pct",
    n: int | None = None,
    std_filters: dict | None = None,
    **filters: object,
) -> PaperRef | None:
    """The printed number matching `filters` (stat defaults to mean, falling back to value), with its std.

    Returns None when the paper prints nothing there (the cell then says "no paper value")."""
    rows = _paper_rows(ref, **{"stat": "mean", **filters})
    if rows.empty and "stat" not in filters:
        rows = _paper_rows(ref, **{"stat": "value", **filters})
    if rows.empty:
        return None
    if len(rows) > 1:
        raise LookupError(f"{len(rows)} paper rows match {filters}")
    row = rows.iloc[0]
    std_rows = _paper_rows(ref, **{**filters, "stat": "std", **(std_filters or {})})
    std = float(std_rows["value"].iloc[0]) if len(std_rows) == 1 else None
    value = float(row["value"])
    rel = row["relation"] or "="
    if kind not in ("pct", "pp"):
        printed = row["printed"]
    else:
        printed = (f"{rel} " if rel != "=" else "") + fmt_value(value, kind, std)
    try:
        half = rounding_halfwidth(row["printed"])
    except ValueError:
        half = 0.05
    return PaperRef(value, std, n, printed, rel, halfwidth=half)


# ------------------------------------------------------------------------------------------- formatting
def fmt_value(x: float | None, kind: str, std: float | None = None) -> str:
    """A number as the tables print it: pct 61.5, pp +12.7, p 0.000056, auc 0.930, kl 0.03%, int 27."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    if kind == "p":
        return f"{format_pvalue(x)} {stars(x)}"
    if kind == "auc":
        return f"{x:.3f}" + (f" ± {std:.3f}" if std is not None else "")
    if kind == "kl":
        return f"{x:.3g}%" if x else "0.0%"
    if kind in ("int", "count"):
        return f"{x:.0f}"
    if kind == "share":
        return f"{x:.0f}%"
    sign = "+" if kind == "pp" else ""
    out = f"{x:{sign}.1f}"
    return out + (f" ± {std:.1f}" if std is not None and not math.isnan(std) else "")


# ------------------------------------------------------------------------------------------------ cells
@dataclass
class Cell:
    row: str
    column: str
    kind: str = "pct"  # pct | pp | p | auc | kl | int | count | share
    paper: PaperRef | None = None
    values: list[float] = field(default_factory=list)  # one per seed (or per configuration)
    run_ids: list[str] = field(default_factory=list)
    n_eval: float = DEFAULT_N_EVAL
    judge: bool = True  # False: shown side by side only (per-seed rows)
    not_applicable: bool = False
    ours_text: str | None = None  # overrides the formatted mean ± std (counts like "8/10")
    se: float | None = None  # standard error of a derived statistic (a gap of two means), for the tolerance
    models: list[str] = field(default_factory=list)  # runs not of the paper's model: shown, not judged
    undefined: str = ""  # why a statistic cannot be computed from these runs ("zero variance", "n=1")
    status: str = field(init=False, default="")
    tolerance: float = field(init=False, default=math.nan)
    protocol: str = field(init=False, default="")  # of the runs behind the cell (stamp_protocol), "" if none
    weak_runs: int = field(init=False, default=0)  # of its runs, those graded in weak sandbox isolation

    def __post_init__(self) -> None:
        self.values = [float(v) for v in self.values if v is not None and not math.isnan(float(v))]
        self.status, self.tolerance = self._judge()

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if len(self.values) >= 2 else None

    def _tolerance(self) -> float:
        p = self.paper
        if self.se is not None:
            return 2 * self.se + (p.halfwidth if p else 0.0)
        # Each side's mean has variance s^2 / n; a side that shows no spread of its own (one run, or a paper
        # value without a std) borrows the other side's per-seed std. An unknown paper seed count counts as 1.
        s_ours = self.std
        s_paper = p.std if p is not None else None
        if s_ours is not None or s_paper is not None:
            s_o = s_ours if s_ours is not None else s_paper
            s_p = s_paper if s_paper is not None else s_ours
            se = math.sqrt(s_o**2 / self.n + s_p**2 / ((p.n if p is not None else None) or 1))
        else:  # single runs on both sides: binomial noise of a pass rate on n_eval problems
            rate = min(max((p.value if self.kind == "pct" and p and p.value else 50.0) / 100, 0.05), 0.95)
            se = 100 * math.sqrt(2 * rate * (1 - rate) / max(self.n_eval, 1))
        return 2 * se + (p.halfwidth if p else 0.0)

    def _judge(self) -> tuple[str, float]:
        if self.not_applicable:
            return "n/a", math.nan
        if self.undefined:
            return "undefined", math.nan
        if not self.values:
            return "missing", math.nan
        p = self.paper
        if p is None or (p.value is None and p.lo is None):
            return "no paper value", math.nan
        if not self.judge or self.models:
            return "info", math.nan
        x = self.mean
        if self.kind == "p":
            paper_sig = p.relation in ("<", "=", "~") and (p.value or 1.0) < 0.05
            return ("agree" if (x < 0.05) == paper_sig else "disagree"), math.nan
        if self.kind in ("count", "int", "share", "auc", "kl"):
            return "info", math.nan  # counts and mechanism scalars: no seed spread to judge by
        tol = self._tolerance()
        if p.relation == "range":
            ok = p.lo - tol <= x <= p.hi + tol
        elif p.relation == "<":
            ok = x < p.value + tol
        elif p.relation in (">", ">="):
            ok = x > p.value - tol
        else:
            ok = abs(x - p.value) <= tol
        return ("agree" if ok else "disagree"), tol

    def ours(self, with_n: bool = True) -> str:
        if self.not_applicable:
            return "n/a"
        if self.undefined:
            return f"n/a ({self.undefined})"
        if not self.values:
            return DASH
        text = self.ours_text or fmt_value(self.mean, self.kind, self.std)
        if with_n and self.judge and self.kind in ("pct", "pp") and self.ours_text is None:
            text += f" (n={self.n})"
        mark = MARK.get(self.status)
        return f"{text} {mark}" if mark else text

    def paper_text(self) -> str:
        if self.not_applicable:
            return "n/a"
        return self.paper.printed if self.paper is not None else DASH

    def record(self) -> dict:
        p = self.paper or PaperRef()
        return {
            "row": self.row, "column": self.column, "kind": self.kind,
            "paper": p.value, "paper_std": p.std, "paper_n": p.n, "paper_text": self.paper_text(),
            "ours": self.mean if self.values else math.nan, "ours_std": self.std, "n": self.n,
            "ours_text": self.ours(with_n=False), "status": self.status, "tolerance": self.tolerance,
            "run_ids": ";".join(self.run_ids), "models": ";".join(self.models), "protocol": self.protocol,
            "sandbox_weak_runs": self.weak_runs,
        }  # fmt: skip


# ------------------------------------------------------------------------------------------------ table
@dataclass
class Table:
    """One paper artifact: compared cells in the paper's row/column order, plus paper-only text columns."""

    key: str  # file stem in paper_figures/: table1, table_app_d, ...
    title: str
    caption: str
    row_header: str
    cells: list[Cell]
    static: dict[str, dict[str, str]] = field(default_factory=dict)  # column -> row -> paper text
    notes: list[str] = field(default_factory=list)
    # a column shown under another model's name (runs of a tiny smoke model) -> that name, so a look-up by
    # the paper's column name (the report's claims) still finds it
    aliases: dict[str, str] = field(default_factory=dict)
    # the protocols of the runs behind its cells (stamp_protocol); None: not stamped, the caption says nothing
    protocols: list[str] | None = None
    # how many of its runs were graded in weak sandbox isolation (issue 14; stamp_protocol): said in the caption
    weak_runs: int = 0

    @property
    def rows(self) -> list[str]:
        return list(dict.fromkeys(c.row for c in self.cells))

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c.column for c in self.cells))

    def cell(self, row: str, column: str) -> Cell:
        column = column if column in self.columns else self.aliases.get(column, column)
        for c in self.cells:
            if c.row == row and c.column == column:
                return c
        raise KeyError((row, column))

    @property
    def run_ids(self) -> list[str]:
        return sorted({r for c in self.cells for r in c.run_ids})

    @property
    def models(self) -> list[str]:
        """Labels of the models behind cells that are not the paper's (tiny smoke runs, random weights)."""
        return sorted({m for c in self.cells for m in c.models})

    @property
    def full_caption(self) -> str:
        caption = f"{self.caption} {protocol_sentence(self.protocols)}".rstrip()
        if self.weak_runs:
            caption += (f" sandbox: weak isolation ({self.weak_runs} run{'s' if self.weak_runs != 1 else ''}): "
                        "graded without namespace isolation (sandbox.isolation=weak, provenance.json).")  # fmt: skip
        if not self.models:
            return caption
        return (f"Runs of {', '.join(self.models)}, not the paper's model: their cells are shown beside the "
                f"paper's numbers, not judged. {caption}")  # fmt: skip

    def frame(self) -> pd.DataFrame:
        """The tidy form (one row per compared cell), written as CSV."""
        return pd.DataFrame([{"table": self.key, **c.record()} for c in self.cells])

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.cells) for s in ("agree", "disagree", "missing")}

    # ------------------------------------------------------------------------------------- renderers
    def _grid(self) -> tuple[list[str], list[list[str]]]:
        header = [self.row_header, *self.static]
        for col in self.columns:
            header += [f"{col}: paper", f"{col}: ours"]
        lookup = {(c.row, c.column): c for c in self.cells}
        body = []
        for row in self.rows:
            line = [row, *(self.static[s].get(row, "") for s in self.static)]
            for col in self.columns:
                c = lookup.get((row, col))
                line += [c.paper_text(), c.ours()] if c else ["", ""]
            body.append(line)
        return header, body

    def to_markdown(self) -> str:
        header, body = self._grid()
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines = [f"### {self.title}", "", self.full_caption, ""]
        lines.append("| " + " | ".join(esc(h) for h in header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        lines += ["| " + " | ".join(esc(x) for x in line) + " |" for line in body]
        counts = self.counts()
        lines += ["", f"✓ agrees with the paper, ✗ differs by more than the seed spread ({counts['agree']} ✓, "
                      f"{counts['disagree']} ✗, {counts['missing']} missing); — no finished run."]  # fmt: skip
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        header, body = self._grid()

        def tex(s: str) -> str:
            for a, b in (("\\", "\\textbackslash{}"), ("%", "\\%"), ("&", "\\&"), ("_", "\\_"), ("#", "\\#"),
                         ("^", "\\^{}"), ("<", "$<$"), (">", "$>$"), ("±", "$\\pm$"), ("✓", "\\checkmark"),
                         ("✗", "$\\times$"), ("—", "--"), ("–", "--"), ("−", "$-$"), ("…", "\\ldots{}"),
                         ("→", "$\\to$"), ("≥", "$\\geq$"), ("α", "$\\alpha$"), ("Δ", "$\\Delta$")):  # fmt: skip
                s = s.replace(a, b)
            return s

        spec = "l" * (1 + len(self.static)) + "r" * (len(header) - 1 - len(self.static))
        out = ["% generated by s0.report.tables; needs \\usepackage{booktabs,amssymb}", "\\begin{table}[t]",
               "\\centering", f"\\caption{{{tex(self.title)}. {tex(self.full_caption)}}}", "\\small",
               f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(tex(h) for h in header) + " \\\\",
               "\\midrule"]  # fmt: skip
        out += [" & ".join(tex(x) for x in line) + " \\\\" for line in body]
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(out) + "\n"

    def to_html(self) -> str:
        header, body = self._grid()
        cls = {"agree": "ok", "disagree": "bad", "missing": "miss"}
        lookup = {(c.row, c.column): c for c in self.cells}
        out = [
            f"<h3 id='{self.key}'>{esc(self.title)}</h3>",
            f"<p class='cap'>{esc(self.full_caption)}</p>",
            "<table>",
        ]
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        n_static = 1 + len(self.static)
        for row, line in zip(self.rows, body):
            tds = [f"<td>{esc(x)}</td>" for x in line[:n_static]]
            for j, col in enumerate(self.columns):
                c = lookup.get((row, col))
                paper, ours = line[n_static + 2 * j], line[n_static + 2 * j + 1]
                tip = f" title='runs: {esc(', '.join(c.run_ids))}'" if c and c.run_ids else ""
                k = cls.get(c.status, "") if c else ""
                tds += [f"<td class='paper'>{esc(paper)}</td>", f"<td class='{k}'{tip}>{esc(ours)}</td>"]
            out.append("<tr>" + "".join(tds) + "</tr>")
        out.append("</table>")
        out += [f"<p class='note'>{esc(n)}</p>" for n in self.notes]
        return "\n".join(out) + "\n"

    def to_csv(self) -> str:
        return self.frame().to_csv(index=False, float_format="%.6g")


# ------------------------------------------------------------------------------------------- protocol
PROTOCOL_GLOSS = {
    "reference": "the authors' released practice where the paper is silent",
    "harness": "this harness's own choices where the paper is silent",
    "unrecorded": "records made before runs recorded their protocol",
}


def protocol_sentence(protocols: list[str] | None) -> str:
    """The caption's last sentence: which protocol (issue 12) the runs behind the table were made under."""
    if protocols is None:
        return ""
    if not protocols:
        return "Run protocol: — (no runs)."
    if len(protocols) == 1:
        gloss = PROTOCOL_GLOSS.get(protocols[0])
        return f"Run protocol: {protocols[0]}" + (f" ({gloss})." if gloss else ".")
    return (f"Run protocols: {', '.join(protocols)}; each cell reads runs of one (the CSV's protocol column "
            "says which).")  # fmt: skip


def stamp_protocol(table: Table, metrics: pd.DataFrame) -> Table:
    """Record each cell's protocol and the table's; a cell whose runs were made under two protocols stops the
    build with MixedProtocolsError (one line, naming the cell and a run of each). Also counts the runs graded in
    weak sandbox isolation (issue 14), per cell and for the table's caption."""
    by_run, weak = protocol_by_run(metrics), weak_runs(metrics)
    for c in table.cells:
        c.weak_runs = len(weak.intersection(c.run_ids))
        found: dict[str, str] = {}
        for r in c.run_ids:
            if r in by_run:
                found.setdefault(by_run[r], r)
        if len(found) > 1:
            runs = ", ".join(f"{p} (run {r})" for p, r in sorted(found.items()))
            raise MixedProtocolsError(
                f"cell {c.row!r} / {c.column!r}: runs of protocols {runs} would pool into one cell; "
                "read one protocol's results at a time"
            )
        c.protocol = next(iter(found), "")
    table.protocols = sorted({c.protocol for c in table.cells if c.protocol})
    table.weak_runs = len(weak.intersection(table.run_ids))
    return table


def with_protocol(fn: Callable[..., Table]) -> Callable[..., Table]:
    """A table function (records first) whose table says, in its caption, the protocol of its runs."""

    @functools.wraps(fn)
    def wrapper(res, *args, **kwargs) -> Table:
        return stamp_protocol(fn(res, *args, **kwargs), res.metrics)

    return wrapper


def esc(s: str) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")


def write_table(table: Table, out_dir: str | Path) -> list[Path]:
    """<key>.md, <key>.tex (booktabs) and <key>.csv (tidy cells) under `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, text in (("md", table.to_markdown()), ("tex", table.to_latex()), ("csv", table.to_csv())):
        path = out / f"{table.key}.{ext}"
        path.write_text(text)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------- cell builders
# Shared by tables.py, tables_appendix.py and tables_seeds.py.
def data_cell(metrics: pd.DataFrame, frame: pd.DataFrame, row: str, column: str, kind: str,
              paper: PaperRef | None, **kw) -> Cell:  # fmt: skip
    """A cell of one arm's per-seed values (`select` / `deltas` rows), with their run ids and n_eval."""
    ids = run_ids_of(frame)
    return Cell(row, column, kind, paper, list(frame.value), ids, n_eval_of(metrics, ids), models=models_of(frame),
                **kw)  # fmt: skip


def derived_cell(row: str, column: str, kind: str, paper: PaperRef | None, value: float | None,
                 frames: list[pd.DataFrame], n: int | None = None, **kw) -> Cell:  # fmt: skip
    """A cell holding one statistic computed from other cells (a gap, a p-value, a share)."""
    vals = [] if value is None or math.isnan(value) else [value]
    ids = sorted({r for f in frames for r in run_ids_of(f)})
    text = kw.pop("ours_text", None) or (fmt_value(value, kind) if vals else None)
    if vals and n is not None and kind != "p":
        text += f" (n={n})"
    return Cell(row, column, kind, paper, vals, ids, ours_text=text, models=models_of(*frames), **kw)


def gap_se(*frames: pd.DataFrame) -> float | None:
    """Standard error of a difference of independent per-seed means (None without a spread on every side)."""
    if any(len(f) < 2 for f in frames):
        return None
    return math.sqrt(sum(f.value.var(ddof=1) / len(f) for f in frames))


def p_cell(row: str, column: str, paper: PaperRef | None, test: TestResult | None,
           frames: list[pd.DataFrame]) -> Cell:  # fmt: skip
    """A p-value cell: "—" without runs, "n/a (zero variance)" or "n/a (n=1)" where the test is undefined."""
    if test is not None and test.reason:
        ids = sorted({r for f in frames for r in run_ids_of(f)})
        return Cell(row, column, "p", paper, [], ids, models=models_of(*frames), undefined=test.reason)
    return derived_cell(row, column, "p", paper, test.pvalue if test else None, frames)


def count_negatives(frame: pd.DataFrame, collapse: bool = False) -> tuple[list[float], str | None]:
    """([number of seeds with a negative delta], "k/n" text), with the collapsed seeds when `collapse`."""
    if frame.empty:
        return [], None
    neg = int((frame.value < 0).sum())
    text = f"{neg}/{len(frame)}"
    if collapse:  # a collapsed seed falls below half its baseline (Sec 5.2: seed 555 at 4.8%)
        n_col = int(((frame.value + frame.baseline) < 0.5 * frame.baseline).sum())
        text += f" ({n_col} collapsed)"
    return [neg], text
