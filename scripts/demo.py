"""`make demo`: the whole pipeline offline on two tiny random-weight models, CPU only.

    python scripts/demo.py [--out results/demo] [--seeds 42,7] [--force]

Runs Table 1's comparison (baseline, S0, one LoRA r24 arm; seeds 42 and 7) on two tiny random-weight
models, tiny_qwen3_5 (8 layers of width 64: 6 GatedDeltaNet, 2 attention; a stand-in for Qwen3.5-4B) and
tiny_falcon_h1 (3 Mamba-2 + attention layers of width 64; for FalconH1-7B), through the real command line
(`python run.py -m experiment=main_qwen|main_falcon debug=smoke`): collection, sandboxed verification,
training, batched evaluation and the results records. Then it rebuilds Table 1 and Figure 1 from those
records exactly as `make tables figures` does for real runs, labelled with the tiny models.

The tiny models have random weights and solve nothing, so collection falls back to the training problems'
canonical solutions (also execution-verified in the sandbox) and every pass@1 is 0: the demo checks the
plumbing, not the paper's claims.

Everything goes under --out (results/demo): runs/ (one folder per run), cache/ (verified solutions, frozen
evaluations), sweeps/ (Hydra's logs), table1.{md,tex,csv}, fig1.{png,pdf} and demo.json (what they were
built from). A rerun skips finished runs without starting the runner; when nothing it depends on changed
(code, configs, finished runs) it only prints where everything is (--force rebuilds the table and figure).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ARMS = {
    "main_qwen": ["baseline", "s0", "lora_r24_lr5e-4"],
    "main_falcon": ["baseline", "s0", "lora_r24_lr1e-4"],
}
STAMP = "demo.json"  # what the last complete demo read: a rerun with the same inputs has nothing to do
# Whatever decides the run ids, the runs' membership, or the table and figure drawn from them.
INPUTS = ("run.py", "conf/**/*.yaml", "s0/**/*.py", "scripts/demo.py", "results/reference/*.csv")
PACKAGES = ("hydra-core", "omegaconf", "numpy", "pandas", "scipy", "matplotlib")


def outputs(out: Path) -> dict[str, Path]:
    """What the demo writes, by what it is."""
    return {
        "runs": out / "runs",
        "cache": out / "cache",
        "logs": out / "sweeps",
        "Table 1": out / "table1.md",
        "  also": out / "table1.tex",
        "  and": out / "table1.csv",
        "Figure 1": out / "fig1.png",
        "  as PDF": out / "fig1.pdf",
        "stamp": out / STAMP,
    }


def fingerprint(args: argparse.Namespace) -> str:
    """A hash of the demo's inputs: the source and config files that decide what runs and what is drawn,
    the command line and the package versions that draw it."""
    h = hashlib.sha256(json.dumps([args.out, args.seeds, ARMS, sys.version]).encode())
    for pattern in INPUTS:
        for path in sorted(ROOT.glob(pattern)):
            h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            h.update(f"{name}=={metadata.version(name)}".encode())
    return h.hexdigest()


def done_runs(runs: Path) -> dict[str, float]:
    """Finished runs under `runs`: id -> when it finished (the mtime of its `done` marker)."""
    return {p.parent.name: p.stat().st_mtime for p in sorted(runs.glob("*/done"))}


def up_to_date(out: Path, print_: str) -> bool:
    """Whether the last complete demo in `out` read exactly these inputs and these finished runs."""
    try:
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return (
        stamp.get("fingerprint") == print_
        and stamp.get("runs") == done_runs(out / "runs")
        and all(
            (out / name).exists()
            for name in ("table1.md", "table1.tex", "table1.csv", "fig1.png", "fig1.pdf")
        )
    )


def planned_run_ids(out: Path, seeds: list[int]) -> dict[str, list[tuple[str, str, int]]]:
    """(run id, arm, seed) of each run the runner would plan, per experiment, computed in this process as
    run.py does (Hydra composition, then s0.run.plan.expand), without starting it or loading any model."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import run as runner
    from s0.run.config import MethodConfig, ModelConfig, TaskConfig
    from s0.run.plan import expand

    runner.register_schema()
    GlobalHydra.instance().clear()
    ids = {}
    with initialize_config_dir(config_dir=str(runner.CONF), version_base="1.3"):
        for experiment, arms in ARMS.items():
            overrides = [f"experiment={experiment}", "debug=smoke", f"seeds=[{','.join(map(str, seeds))}]",
                         f"paths.results={out / 'runs'}", f"paths.cache={out / 'cache'}"]  # fmt: skip
            run_cfg, plain = runner.to_run_config(
                compose(config_name="config", overrides=overrides), overrides
            )
            tasks = runner.load_group("task", TaskConfig, resolve_with={"paths": plain["paths"]})
            methods, models = (
                runner.load_group("method", MethodConfig),
                runner.load_group("model", ModelConfig),
            )
            runs = expand(run_cfg, methods, models, tasks)
            ids[experiment] = [(r.run_id, r.arm, r.seed) for r in runs if r.arm in arms and r.seed in seeds]
    GlobalHydra.instance().clear()
    return ids


def pending_experiments(out: Path, seeds: list[int]) -> list[str]:
    """The experiments with a planned run not yet finished (all of them if the plan cannot be computed here:
    the runner then decides, skipping what is done)."""
    try:
        ids = planned_run_ids(out, seeds)
    except Exception as err:  # the runner is the authority: it plans again and reports its own errors
        print(f"(could not plan in this process: {type(err).__name__}: {err}; asking the runner)")
        return list(ARMS)
    pending = []
    for experiment, planned in ids.items():
        # finished, and recorded as this experiment's arm (a run can serve several experiments)
        runs = out / "runs"
        finished = [(runs / r / "done").exists() and (runs / r / f"member-{experiment}-{arm}.json").exists()
                    for r, arm, _ in planned]  # fmt: skip
        print(f"{experiment}: {sum(finished)} of {len(planned)} runs already finished in {out / 'runs'}")
        if not planned or not all(finished):
            pending.append(experiment)
    return pending


def print_outputs(out: Path, wrote: bool = True) -> None:
    print("\nThe demo wrote:" if wrote else "\nThe demo's files (unchanged):")
    for name, path in outputs(out).items():
        if path.exists():  # sweeps/ only once the runner has run here
            print(f"  {name:<9} {path}")
    print(
        "Models: tiny_qwen3_5 and tiny_falcon_h1, random weights (stand-ins for Qwen3.5-4B and FalconH1-7B):\n"
        "every pass@1 is 0 and S0/LoRA train on reference solutions; this checks the plumbing, not the paper."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(ROOT / "results" / "demo"), help="where everything goes")
    parser.add_argument("--seeds", default="42,7", help="comma-separated seeds")
    parser.add_argument("--force", action="store_true", help="rebuild the table and figure even if current")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    args.out = str(out)
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.time()
    stamp = fingerprint(args)
    if not args.force and up_to_date(out, stamp):
        print(f"Nothing to do: the demo in {out} is current (same code, configs and finished runs).")
        print((out / "table1.md").read_text())
        print_outputs(out, wrote=False)
        return 0

    print(__doc__.split("\n\n")[2].replace("\n", " ") + "\n")
    for experiment in pending_experiments(out, seeds):
        cmd = [sys.executable, str(ROOT / "run.py"), "-m", f"experiment={experiment}", "debug=smoke",
               f"seed={args.seeds}", f"arm={','.join(ARMS[experiment])}", f"paths.results={out / 'runs'}",
               f"paths.cache={out / 'cache'}", f"hydra.sweep.dir={out / 'sweeps' / experiment}"]  # fmt: skip
        print("$", " ".join(cmd[1:]), flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            print(f"demo: {experiment} failed", file=sys.stderr)
            return 1

    from s0.report.figures import fig1
    from s0.report.reference import load_paper_values
    from s0.report.table_core import write_table
    from s0.report.tables import table1
    from s0.run.records import load_results

    res = load_results(out / "runs")
    print("\n" + res.report())
    ref = load_paper_values()
    table = table1(res, ref)
    write_table(table, out)
    print("\n" + table.to_markdown())
    figure = fig1(res, ref)
    for ext in ("png", "pdf"):
        figure.savefig(out / f"fig1.{ext}", dpi=150, bbox_inches="tight")
    (out / STAMP).write_text(json.dumps({"fingerprint": stamp, "runs": done_runs(out / "runs")}, indent=1))
    print_outputs(out)
    print(f"({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
