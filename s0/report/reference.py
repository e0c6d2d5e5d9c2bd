"""The paper's reported numbers, transcribed by hand into results/reference/paper_values.csv.

One row per printed number (see results/reference/README.md for the columns). Tables and figure
scripts compare reproduced results against these rows instead of copying numbers into code:

    >>> paper_value(source="Table 6", metric="delta", stat="mean")
    12.7
    >>> paper_value(source="App H", model="qwen3_5_9b", metric="delta", stat="std")
    1.2
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

PAPER_VALUES = Path(__file__).resolve().parents[2] / "results" / "reference" / "paper_values.csv"
# The authors' released per-seed result files (github.com/JackYoung27/s0-tuning, experiments/results/), one row
# per file, numbers as released (fractions); results/reference/README.md describes the columns.
AUTHORS_RELEASED = PAPER_VALUES.parent / "authors_released.csv"

COLUMNS = (
    "source", "experiment", "model", "task", "method", "setting", "seed", "metric", "stat",
    "relation", "value", "unit", "printed", "row", "column", "also_in", "note",
)  # fmt: skip
# First number in a printed cell: optional sign, digits, decimals, optionally "×10^-4" or a bare "10^-8".
_NUMBER = re.compile(r"(?P<sign>[+-])?(?P<mant>\d+(?:\.\d+)?)(?:×10\^(?P<exp>-?\d+))?")
# Together these locate one printed number; the test suite checks that no two rows share them.
KEY = (
    "source", "experiment", "model", "task", "method", "setting", "seed", "metric", "stat", "row", "column",
)  # fmt: skip


def load_paper_values(path: str | Path | None = None) -> pd.DataFrame:
    """Read the reference CSV: every column is a string ('' when empty) except ``value`` (float)."""
    # keep_default_na=False: an empty cell means "not applicable", and strings like "n/a" must stay text.
    df = pd.read_csv(path or PAPER_VALUES, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path or PAPER_VALUES} lacks columns {missing}")
    df["value"] = df["value"].astype(float)
    return df


def paper_rows(df: pd.DataFrame | None = None, **filters: object) -> pd.DataFrame:
    """Rows whose columns equal every filter (numbers and ints are compared as their CSV text, e.g. seed=42)."""
    df = load_paper_values() if df is None else df
    mask = pd.Series(True, index=df.index)
    for col, want in filters.items():
        if col not in df.columns:
            raise KeyError(f"unknown column {col!r}; columns are {list(df.columns)}")
        mask &= df[col] == (want if col == "value" else str(want))
    return df[mask]


def paper_value(df: pd.DataFrame | None = None, **filters: object) -> float:
    """The single value matching ``filters``; raises LookupError if zero or several rows match."""
    rows = paper_rows(df, **filters)
    if len(rows) != 1:
        shown = rows[["source", "experiment", "model", "method", "setting", "seed", "metric", "stat", "row"]]
        raise LookupError(
            f"{len(rows)} rows match {filters}, need exactly 1" + ("" if rows.empty else f":\n{shown}")
        )
    return float(rows["value"].iloc[0])


def parse_printed(printed: str) -> float | None:
    """The first number in a ``printed`` cell ('+23.6' -> 23.6, '5×10^-4' -> 5e-4, 'p<10^-8' -> 1e-8), or None."""
    m = _NUMBER.search(printed)
    if m is None:
        return None
    if printed[m.end() : m.end() + 2] == "^-" and m["exp"] is None:  # bare power of ten: "10^-8"
        m2 = re.match(r"\^(-?\d+)", printed[m.end() :])
        return float(m["mant"]) ** int(m2[1]) if m2 else None
    value = float(m["mant"]) * (10.0 ** int(m["exp"]) if m["exp"] else 1.0)
    return -value if m["sign"] == "-" else value


def rounding_halfwidth(printed: str) -> float:
    """Half a unit in the last printed digit of the first number ('+23.6' -> 0.05, 'p=0.00002' -> 5e-6).

    A reproduced value within this of the printed one is indistinguishable from it after the paper's rounding.
    """
    m = _NUMBER.search(printed)
    if m is None:
        raise ValueError(f"no number in {printed!r}")
    decimals = len(m["mant"].partition(".")[2])
    scale = 10.0 ** int(m["exp"]) if m["exp"] else 1.0
    return 0.5 * 10.0**-decimals * scale


def load_authors_released(path: str | Path | None = None) -> pd.DataFrame:
    """The authors' released per-seed MATH-500, GSM8K and Spider results; `delta_pp` = 100 x `delta`."""
    df = pd.read_csv(
        path or AUTHORS_RELEASED, dtype={"normalize_alpha": str, "note": str}, keep_default_na=False
    )
    df["delta_pp"] = 100.0 * df["delta"].astype(float)
    return df


def authors_summary(
    task: str, df: pd.DataFrame | None = None, alpha: float | None = None
) -> dict[str, float]:
    """Mean and sample std of the released per-seed deltas (pp), their count, and the two-sided one-sample t-test
    p of 'delta = 0' (NaN for a single run, whose seed is given), for one task (and one alpha, for Spider's
    single-seed sweep)."""
    from s0.stats import one_sample_ttest

    df = load_authors_released() if df is None else df
    rows = df[df["task"] == task]
    if alpha is not None:
        rows = rows[rows["alpha"].astype(str).map(lambda a: a != "" and float(a) == alpha)]
    x = rows["delta_pp"].to_numpy(dtype=float)
    if not len(x):
        raise LookupError(
            f"no released rows for task={task!r}" + (f", alpha={alpha}" if alpha is not None else "")
        )
    test = one_sample_ttest(x)
    std = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
    seed = int(rows["seed"].iloc[0]) if len(x) == 1 else None
    return {"n": len(x), "mean": float(x.mean()), "std": std, "p": float(test.pvalue), "seed": seed}
