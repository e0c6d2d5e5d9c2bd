"""Sec 6 mechanistic analyses for every seed of the `mechanism` experiment, written beside its S0 run.

    python run.py experiment=mechanism                 # the baseline and S0 runs (shared with main_qwen seed 42)
    python scripts/mechanism.py                        # -> results/runs/<s0 run>/analysis/{persistence,divergence,probe}.csv
    python run.py experiment=mechanism debug=smoke          # tiny, CPU; smoke runs go to results/smoke/runs
    python scripts/mechanism.py --results results/smoke/runs --max-prompts 4

For each (baseline run, S0 run, seed): the model and the saved S0 adapter are loaded from the S0 run; prompts are
its evaluation split. Persistence runs the first --max-prompts prompts with the tuned and the zero state; the
probe reads every recurrent state and the residual stream at the last prompt token of every prompt, labelled by
the baseline's greedy correctness (base model by default: the paper does not say which; --probe-model tuned
probes with S0 active); divergence comes from the two runs' greedy completions. Tables and the report read the
results through s0.run.mechanism.load_analyses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s0.run.mechanism import mechanism_pairs, run_mechanism
from s0.run.records import load_results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results/runs", help="results directory")
    p.add_argument("--experiment", default="mechanism", help="experiment whose baseline/s0 arms to analyse")
    p.add_argument("--max-prompts", type=int, default=1000, help="prompts for the persistence analysis")
    p.add_argument("--probe-model", choices=("base", "tuned"), default="base")
    p.add_argument("--pca-dims", type=int, default=64)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    results = Path(args.results)
    pairs = mechanism_pairs(load_results(results, with_samples=False).metrics, args.experiment)
    if not pairs:
        print(f"no finished baseline and s0 runs of experiment '{args.experiment}' in {results}; "
              f"run `python run.py experiment={args.experiment}` first", file=sys.stderr)  # fmt: skip
        return 1
    dirs = run_mechanism(results, args.experiment, args.max_prompts, args.probe_model, args.pca_dims, args.folds,
                         args.device)  # fmt: skip
    for out in dirs:
        summary = json.loads((out / "summary.json").read_text())
        print(f"{out}: " + json.dumps({k: v for k, v in summary.items() if k != "meta"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
