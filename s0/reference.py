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

PAPER_VALUES = Path(__file__).resolve().parent.parent / "results" / "reference" / "paper_values.csv"

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
