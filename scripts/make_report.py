"""The reproduction report: every table and figure, a verdict per claim, the runs behind each number.

python scripts/make_report.py                                # results/runs -> paper_figures/report.{md,html}
python scripts/make_report.py --paper-fixtures               # the paper's own values (sanity check: all reproduced
                                                             #  or not run) -> paper_figures/paper_fixtures/
python scripts/make_report.py --no-figures                   # tables and verdicts only (seconds)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s0.report.page import add_io_args, judge_claims, load_inputs, run_cli, write_report
from s0.report.table_core import write_table
from s0.report.tables import build_tables


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_io_args(parser)
    parser.add_argument("--no-figures", action="store_true", help="skip the figures")
    parser.add_argument(
        "--models", nargs="+", default=["qwen3_5_4b", "falcon_h1_7b"], help="Fig 2 models (conf/model)"
    )
    args = parser.parse_args(argv)
    res, analyses, sources, out = load_inputs(args)
    tables = build_tables(res, analyses)
    for t in tables:
        write_table(t, out)
    figures = []
    if not args.no_figures:
        from make_figures import write_figures

        figures = [p.name for p in write_figures(res, out, models=args.models)]
    verdicts = judge_claims({t.key: t for t in tables})
    md, html = write_report(out, tables, verdicts, figures, res, sources)
    tally = {v: sum(x.verdict == v for x in verdicts) for v in ("reproduced", "not reproduced", "not run")}
    print(f"{md}, {html}: " + ", ".join(f"{n} {k}" for k, n in tally.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
