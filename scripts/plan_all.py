"""`make plan`: every experiment's plan in one process, in seconds, writing nothing.

    python scripts/plan_all.py                          # every experiment in conf/experiment/
    python scripts/plan_all.py main_qwen scaling        # some of them, in this order
    python scripts/plan_all.py debug=smoke              # any override, applied to every experiment
    python scripts/plan_all.py --summary                # only each plan's summary

Each plan is what `python run.py experiment=NAME plan=true` prints (its summary, one line per run, each run's
estimated GPU time: s0/run/cost.py), but
the configs are composed with Hydra's compose API: no job is launched, so no outputs/ folder is written, and
the package is imported once rather than once per experiment. A config mistake ends in one line (exit 2). The
last line is the GPU time of `make reproduce-all`: every distinct run of the plans (experiments share runs), on
the GPU class of `gpu=` (default: the one present, else h200).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import run  # noqa: E402  (the runner: the same composition, checks and summary as `run.py plan=true`)


def experiments() -> list[str]:
    return sorted(p.stem for p in (run.CONF / "experiment").glob("*.yaml"))


def plans(names: list[str], overrides: list[str], summary_only: bool = False):
    """Yield (name, text, runs, gpu) per experiment: the summary and, unless summary_only, the listing."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from s0.run.config import MethodConfig, ModelConfig, TaskConfig
    from s0.run.plan import expand, format_plan

    run.register_schema()
    methods = run.load_group("method", MethodConfig)
    models = run.load_group("model", ModelConfig)
    tasks_by_paths: dict[str, dict] = {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(run.CONF), version_base="1.3"):
        for name in names:
            args = [f"experiment={name}", *overrides]
            cfg = compose("config", overrides=args)
            run_cfg, plain = run.to_run_config(cfg, args)
            key = repr(plain["paths"])
            if key not in tasks_by_paths:  # task files interpolate ${paths.*}
                tasks_by_paths[key] = run.load_group(
                    "task", TaskConfig, resolve_with={"paths": plain["paths"]}
                )
            runs = expand(run_cfg, methods, models, tasks_by_paths[key])
            text = run.summary(run_cfg, runs, args)
            plan = text if summary_only else text + "\n" + format_plan(runs, run_cfg.gpu)
            yield name, plan, runs, run_cfg.gpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("args", nargs="*", help="experiment names and/or overrides (key=value)")
    parser.add_argument("--summary", action="store_true", help="only each plan's summary, no run listing")
    args = parser.parse_args(argv)
    overrides = [a for a in args.args if "=" in a]
    names = [a for a in args.args if "=" not in a] or experiments()
    unknown = sorted(set(names) - set(experiments()))
    if unknown:
        run.fail(f"unknown experiment {', '.join(unknown)}; choose from: {', '.join(experiments())}")
    if any(o.split("=")[0].lstrip("+~") == "experiment" for o in overrides):
        run.fail("give experiments by name (`plan_all.py main_qwen`), not experiment=...")
    run.check_group_choices(overrides)
    run.check_keys(overrides)

    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from s0.models import ModelError

    # The errors a plan can raise; not the pipeline's (importing it loads transformers and peft).
    from s0.run.config import ConfigError
    from s0.run.cost import NoMeasurement, estimate, total_line
    from s0.tasks import TaskDataError

    start, total, distinct, chosen = time.time(), 0, {}, None
    try:
        for i, (name, text, runs, gpu) in enumerate(plans(names, overrides, args.summary)):
            print(("\n" if i else "") + f"== {name} " + "=" * max(0, 100 - len(name)))
            print(text, flush=True)
            total += len(runs)
            distinct.update((r.run_id, r) for r in runs)
            chosen = gpu  # the same gpu= for every plan
        bill = estimate(list(distinct.values()), chosen)
    except NoMeasurement as err:
        bill = err
    except (ConfigError, ModelError, TaskDataError) as err:
        run.fail(str(err))
    except (HydraException, OmegaConfBaseException) as err:
        run.fail(str(err).strip().splitlines()[0])
    except BrokenPipeError:  # `make plan | head`: stop quietly, also at exit's flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    print(f"\n{len(names)} plans, {total} runs ({time.time() - start:.1f} s)")
    if isinstance(bill, NoMeasurement):
        print(f"GPU time: not estimated, {bill}")
        return 0
    print(f"GPU time on {bill.note}")
    print(total_line(bill, "make reproduce-all" if set(names) == set(experiments()) else "these plans"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
