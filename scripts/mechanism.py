"""Sec 6 mechanistic analyses for every seed of the `mechanism` experiment, written beside its S0 run.

    python run.py experiment=mechanism                 # the baseline and S0 runs (shared with main_qwen seed 42)
    python scripts/mechanism.py                        # -> results/runs/<s0 run>/analysis/{persistence,divergence,probe}.csv
    python run.py experiment=mechanism debug=smoke && python scripts/mechanism.py --max-prompts 4   # tiny, CPU

For each (baseline run, S0 run, seed): the model and the saved S0 adapter are loaded from the S0 run; prompts are
its evaluation split. Persistence runs the first --max-prompts prompts with the tuned and the zero state; the
probe reads every recurrent state and the residual stream at the last prompt token of every prompt, labelled by
the baseline's greedy correctness (base model by default: the paper does not say which; --probe-model tuned
probes with S0 active); divergence comes from the two runs' greedy completions. Tables and the report read the
results through s0.analysis.load_analyses.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from s0 import analysis as an
from s0.records import load_results
from s0.tables_appendix import mechanism_pairs


def analyse(results: Path, base_id: str, s0_id: str, seed: int, args) -> Path:
    import torch

    from s0.adapters import load_adapter
    from s0.config import ModelConfig, TaskConfig
    from s0.pipeline import load_model, resolve_device, task_for

    run = json.loads((results / s0_id / "run.json").read_text())
    device = resolve_device(args.device)
    model, tok = load_model(SimpleNamespace(model=ModelConfig(**run["model"])), device)
    adapter = load_adapter(results / s0_id / "adapter", model)
    task = task_for(TaskConfig(**run["eval_task"]))
    examples = task.load_split("eval")
    prompts = [task.build_prompt(ex, tok) for ex in examples]
    samples = load_results(results).samples
    base = samples[(samples.run_id == base_id) & (samples.get("sample", 0) == 0)].set_index("id").correct
    labels = np.array([int(bool(base.get(ex.id, False))) for ex in examples])
    torch.manual_seed(seed)
    pers = an.persistence(model, tok, adapter, prompts[: args.max_prompts])
    feats = an.probe_features(model, tok, prompts, adapter if args.probe_model == "tuned" else None)
    probe = an.probe(feats, labels, n_components=args.pca_dims, folds=args.folds, seed=seed)
    div = an.divergence_from_samples(samples, [(base_id, s0_id, seed)])
    meta = {"baseline_run": base_id, "s0_run": s0_id, "seed": seed, "probe_model": args.probe_model,
            "n_prompts": len(prompts), "persistence_prompts": min(len(prompts), args.max_prompts)}  # fmt: skip
    return an.write_analysis(results / s0_id, meta, persistence=pers, divergence=div, probe=probe)


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
    for base_id, s0_id, seed in pairs:
        out = analyse(results, base_id, s0_id, seed, args)
        summary = json.loads((out / "summary.json").read_text())
        print(f"seed {seed}: {out} " + json.dumps({k: v for k, v in summary.items() if k != "meta"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
