"""`make demo`: the whole pipeline offline on the tiny models, CPU only, in a few minutes.

    python scripts/demo.py [--out results/demo] [--seeds 42,7]

Runs Table 1's comparison (baseline, S0, LoRA r24) for tiny Qwen3.5 (GatedDeltaNet) and tiny FalconH1
(Mamba-2) through the real command line (`python run.py -m ... debug=smoke`): collection, sandboxed
verification, training, batched evaluation and the results records, then rebuilds Table 1 and Figure 1a
from those records exactly as `make tables figures` does for real runs.

The tiny models have random weights and solve nothing, so collection falls back to the training problems'
canonical solutions (also execution-verified in the sandbox) and every pass@1 is 0: the demo checks the
plumbing, not the paper's claims.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARMS = {"main_qwen": "baseline,s0,lora_r24_lr5e-4", "main_falcon": "baseline,s0,lora_r24_lr1e-4"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default=str(ROOT / "results" / "demo"), help="where runs, tables and figures go"
    )
    parser.add_argument("--seeds", default="42,7", help="comma-separated seeds")
    args = parser.parse_args(argv)
    out = Path(args.out)
    start = time.time()
    print(__doc__.split("\n\n")[2].replace("\n", " ") + "\n")
    for experiment, arms in ARMS.items():
        cmd = [sys.executable, str(ROOT / "run.py"), "-m", f"experiment={experiment}", "debug=smoke",
               f"seed={args.seeds}", f"arm={arms}", f"paths.results={out / 'runs'}",
               f"paths.cache={out / 'cache'}", f"hydra.sweep.dir={out / 'sweeps' / experiment}"]  # fmt: skip
        print("$", " ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            print(f"demo: {experiment} failed", file=sys.stderr)
            return 1

    from s0.figures import fig1
    from s0.records import load_results
    from s0.reference import load_paper_values
    from s0.table_core import write_table
    from s0.tables import table1

    res = load_results(out / "runs")
    print("\n" + res.report())
    table = table1(res, load_paper_values())
    write_table(table, out)
    print("\n" + table.to_markdown())
    figure = fig1(res, load_paper_values())
    for ext in ("png", "pdf"):
        figure.savefig(out / f"fig1.{ext}", dpi=150, bbox_inches="tight")
    print(f"\nTable 1: {out / 'table1.md'}   Figure 1: {out / 'fig1.png'}   ({time.time() - start:.0f} s)")
    print(
        "Tiny random models: every pass@1 is 0 and S0/LoRA train on reference solutions; this checks the plumbing."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
