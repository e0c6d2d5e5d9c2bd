"""Time the sandbox on HumanEval: the 164 canonical solutions (all must pass), then the same 164 with their
last `return` replaced by `return None` (all must fail).

Usage:
    python benchmarks/bench_sandbox_humaneval.py                  # 2 workers, prints a summary
    python benchmarks/bench_sandbox_humaneval.py --workers 4 --out benchmarks/results/sandbox_humaneval.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import resource
import time

from s0 import sandbox
from s0.tasks import get_task
from s0.tasks.humaneval import break_last_return


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the summary as JSON here")
    args = ap.parse_args()

    iso = sandbox.isolation()
    task = get_task("humaneval")
    exs = task.load_split("train") + task.load_split("eval")
    good = [task.reference_completion(e) for e in exs]
    bad = [break_last_return(e.meta["prompt"], g, e.meta["entry_point"]) for e, g in zip(exs, good)]
    summary = {
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "isolation": {k: v for k, v in iso.items() if k != "prefix"},
        "task_version": task.VERSION,
    }
    for name, comps, want in (("canonical", good, True), ("return_none", bad, False)):
        t, cpu = time.perf_counter(), _child_cpu()
        recs = task.score(exs, comps, workers=args.workers, progress=False)
        wall = time.perf_counter() - t
        ok = sum(r["correct"] == want for r in recs)
        summary[name] = {
            "n": len(recs),
            "as_expected": ok,
            "verdicts": dict(collections.Counter(r["verdict"] for r in recs)),
            "wall_s": round(wall, 2),
            "child_cpu_s": round(_child_cpu() - cpu, 2),
            "programs_per_s": round(len(recs) / wall, 1),
        }
        print(f"{name:12s} {ok}/{len(recs)} as expected  {wall:6.1f} s wall on {args.workers} workers "
              f"({len(recs) / wall:.1f} programs/s, {summary[name]['child_cpu_s']} s child CPU)  "
              f"{summary[name]['verdicts']}")  # fmt: skip
    print("isolation:", summary["isolation"])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    return 0 if all(summary[k]["as_expected"] == 164 for k in ("canonical", "return_none")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
