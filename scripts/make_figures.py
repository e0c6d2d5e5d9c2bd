"""Every paper figure from the results records (Fig 2 from a model's real layer layout): PDF and PNG.

    python scripts/make_figures.py                               # results/runs -> paper_figures/
    python scripts/make_figures.py --only fig1 fig2
    python scripts/make_figures.py --paper-fixtures              # the paper's own values -> paper_figures/paper_fixtures/
    python scripts/make_figures.py --only fig2 --models qwen3_5_4b tiny_qwen3_5

Fig 2 builds each conf/model/<name>.yaml on the meta device (no weights, no memory) and draws its layers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s0.report.page import add_io_args, load_inputs, run_cli

KEYS = ("fig1", "fig2", "fig3", "fig4")


def write_figures(
    res, out: Path, only=None, models=("qwen3_5_4b", "falcon_h1_7b"), dpi: int = 150
) -> list[Path]:
    """Render the figures into `out` as <key>.pdf and <key>.png; returns the PNG paths."""
    from s0.report.figures import FIGURES
    from s0.report.figures_graph import fig2, layout_from_conf

    out.mkdir(parents=True, exist_ok=True)
    made = []
    for key in KEYS:
        if only and key not in only:
            continue
        if key == "fig2":
            figs = {f"fig2_{m}": fig2(*layout_from_conf(m)) for m in models}
        else:
            figs = {key: FIGURES[key](res)}
        for name, fig in figs.items():
            fig.savefig(out / f"{name}.pdf")
            fig.savefig(out / f"{name}.png", dpi=dpi)
            made.append(out / f"{name}.png")
    return made


def main(argv: list[str] | None = None) -> int:
    return run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_io_args(parser)
    parser.add_argument(
        "--models", nargs="+", default=["qwen3_5_4b", "falcon_h1_7b"], help="Fig 2 models (conf/model)"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or []) - set(KEYS))
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(KEYS)}")
    res, _, _, out = load_inputs(args)
    for png in write_figures(res, out, args.only, args.models):
        print(f"{png.with_suffix('')}.{{pdf,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
