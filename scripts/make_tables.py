"""Every paper table from the results records: Markdown, LaTeX (booktabs) and CSV, into paper_figures/.

python scripts/make_tables.py                                # results/runs -> paper_figures/
python scripts/make_tables.py --only table1 table_app_h      # some tables (keys: --list)
python scripts/make_tables.py --paper-fixtures               # the paper's own values -> paper_figures/paper_fixtures/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s0.report.page import add_io_args, load_inputs, run_cli
from s0.report.table_core import write_table
from s0.report.tables import all_tables, build_tables
from s0.run.lookup import scope_notes


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_io_args(parser)
    parser.add_argument("--list", action="store_true", help="list the table keys and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(all_tables()))
        return 0
    unknown = sorted(set(args.only or []) - set(all_tables()))
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)}; choose from {', '.join(all_tables())}")
    res, analyses, _, out = load_inputs(args)
    for note in scope_notes(res.metrics):
        print(note)
    for table in build_tables(res, analyses, only=args.only):
        write_table(table, out)
        c = table.counts()
        print(
            f"{out / table.key}.{{md,tex,csv}}: {c['agree']} agree, {c['disagree']} differ, {c['missing']} missing"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
