"""The runner: the only place that knows about Hydra.

    python run.py experiment=main_qwen seed=42          # one seed, every arm of the experiment
    python run.py -m experiment=main_qwen               # the experiment's seed sweep, one job per seed
    python run.py experiment=main_qwen plan=true        # list the concrete runs, load nothing
    python run.py experiment=main_qwen debug=smoke      # tiny models on CPU (main_qwen: 60 runs, minutes)
    python run.py -m experiment=main_qwen hydra/launcher=ray   # the sweep through Ray, one job per GPU
    python run.py --help                                # this text; --hydra-help for Hydra's own

Composes conf/, checks types and values against s0/run/config.py, expands the experiment into runs (s0/run/plan.py)
and hands them to the pipeline. A mistake (config, device, launcher, an unreachable hub) ends in one line on
stderr and exit code 2; Ctrl-C ends in one line saying how to resume, exit code 130. Rerunning a command skips
its finished runs and redoes interrupted ones (from the saved adapter if training had finished).
"""

from __future__ import annotations

import copy
import os
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

CONF = Path(__file__).resolve().parent / "conf"
# Config groups a command line may select by name; each name must be a file in conf/<group>/.
GROUPS = ("experiment", "model", "method", "task", "protocol", "logger", "debug", "paths", "hydra/launcher")


INTERRUPTED = (
    "interrupted (Ctrl-C): finished runs are kept; rerun the same command to skip them and resume the "
    "interrupted run (from its saved adapter if training had finished)"
)
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def usage() -> str:
    """`run.py --help`: the commands, the config groups with their choices, and where the schema lives."""
    groups = []
    for group in GROUPS:
        choices = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        if group == "hydra/launcher":
            choices = ["basic (default)", *choices, "submitit_local", "submitit_slurm"]
        lines = textwrap.wrap(
            ", ".join(choices), 100, initial_indent=f"  {group + '=':<16}", subsequent_indent=" " * 18
        )
        groups.extend(lines)
    return "\n".join(
        [
            "usage: python run.py [-m] [group=choice ...] [key=value ...]",
            (__doc__ or "").split("\n", 1)[1].rstrip(),
            "",
            "Config groups (conf/<group>/<choice>.yaml):",
            *groups,
            "",
            "Keys: every field of RunConfig in s0/run/config.py, each with its help text and default; the common protocol",
            "is conf/config.yaml, each experiment conf/experiment/<name>.yaml. `-m` sweeps comma-separated values",
            "(seed=42,7). Show a composed config without running: python run.py <overrides> --cfg job.",
            "Hydra's own help: python run.py --hydra-help",
        ]
    )


def check_device(device: str, plan: bool) -> None:
    """`device=tpu` (or cuda on a machine without one) gets one line, before anything loads."""
    if not DEVICE.fullmatch(device):
        fail(f"device '{device}' is not one of auto, cpu, cuda, cuda:N, mps")
    if plan or device in ("auto", "cpu"):
        return
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"device={device} but torch sees no CUDA GPU; use device=cpu or device=auto")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        fail(f"device={device} but torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    if device == "mps" and not torch.backends.mps.is_available():
        fail("device=mps but MPS is not available here; use device=cpu or device=auto")


def check_group_choices(argv: list[str]) -> None:
    """Unknown group options get one line naming the choices, before Hydra prints its own report."""
    for arg in argv:
        m = re.fullmatch(r"[+~]*([\w/]+)=(.*)", arg)
        if not m or m.group(1) not in GROUPS or m.group(2) in ("", "null"):
            continue
        group, value = m.groups()
        choices = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        values = re.sub(r"^(choice|glob)\((.*)\)$", r"\2", value).split(",")
        for name in values:
            if name.strip() not in choices and not (
                group == "hydra/launcher" and name in ("basic", "submitit_local", "submitit_slurm")
            ):
                fail(f"unknown {group.split('/')[-1]} '{name.strip()}'; choose from: {', '.join(choices)}")


def check_keys(argv: list[str]) -> None:
    """A misspelt key (`sed=42`, `method.alhpa=0.1`) gets one line instead of Hydra's struct error."""
    import dataclasses
    import typing

    from s0.run.config import RunConfig

    for arg in argv:
        m = re.fullmatch(r"([\w.]+)=.*", arg)
        if not m or m.group(1) in GROUPS or m.group(1).startswith("hydra"):
            continue
        node: typing.Any = RunConfig
        for part in m.group(1).split("."):
            if not dataclasses.is_dataclass(node):
                break  # a free-form dict (arms, arch, selection): anything goes beneath it
            fields = {f.name: f for f in dataclasses.fields(node)}
            if part not in fields:
                fail(f"unknown config key '{m.group(1)}' ('{part}' is not one of {', '.join(fields)})")
            node = typing.get_type_hints(node)[part]


def check_ray(argv: list[str]) -> None:
    """hydra/launcher=ray (conf/hydra/launcher/ray.yaml): the plugin must be installed, and a job asking for a
    GPU on a machine without one (and no cluster to join) would wait forever in Ray's queue: one line instead."""
    import importlib.util
    import warnings

    if "hydra/launcher=ray" not in argv:
        return
    if importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        fail("hydra/launcher=ray needs hydra-ray-launcher: pip install -c constraints.txt -e '.[ray]'")
    # Our ray.yaml shares its name with the plugin's schema, which Hydra then checks it against (as wanted) with
    # a deprecation notice on every composition.
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema"
    )
    from omegaconf import OmegaConf

    given = dict(a.split("=", 1) for a in argv if a.startswith("hydra.launcher.ray."))
    ray = OmegaConf.load(CONF / "hydra" / "launcher" / "ray.yaml").ray
    address = given.get("hydra.launcher.ray.init.address", ray.init.address)
    gpus = given.get("hydra.launcher.ray.remote.num_gpus", ray.remote.num_gpus)
    if address not in (None, "null") or str(gpus) in ("0", "0.0", "None", "null"):
        return
    import torch

    if not torch.cuda.is_available():
        fail(
            f"hydra/launcher=ray asks {gpus} GPU per job (hydra.launcher.ray.remote.num_gpus) and torch sees no "
            "CUDA GPU here, so no job could start; add hydra.launcher.ray.remote.num_gpus=0 to run them on the "
            "CPU, or join a Ray cluster with hydra.launcher.ray.init.address=<head>"
        )


def register_schema() -> None:
    """Every key of RunConfig exists before composition, so `plan=true` needs no `+`. Types are checked later,
    by s0/run/config.py, so that a wrong value gets one line rather than Hydra's report."""
    import dataclasses

    from hydra.core.config_store import ConfigStore

    from s0.run.config import RunConfig

    ConfigStore.instance().store(name="run_schema", node=dataclasses.asdict(RunConfig()))


def main() -> None:
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(usage())
        return
    check_group_choices(sys.argv[1:])
    check_keys(sys.argv[1:])
    check_ray(sys.argv[1:])
    register_schema()
    import hydra
    from omegaconf import DictConfig

    @hydra.main(config_path="conf", config_name="config", version_base="1.3")
    def hydra_entry(cfg: DictConfig) -> None:
        from s0.adapters import AdapterError
        from s0.backends import BackendError
        from s0.models import ModelError
        from s0.run.config import ConfigError
        from s0.run.pipeline import PipelineError
        from s0.tasks import TaskDataError

        try:
            execute(cfg)
        except (ConfigError, ModelError, PipelineError, TaskDataError, AdapterError, BackendError) as err:
            fail(str(err))

    hydra_entry()


def load_group(group: str, schema: type, resolve_with: dict | None = None) -> dict:
    """Every entry of a conf/ group as a typed dataclass, by file name."""
    from omegaconf import OmegaConf

    from s0.run.plan import merge_typed

    entries = {}
    for path in sorted((CONF / group).glob("*.yaml")):
        raw = OmegaConf.load(path)
        if resolve_with is not None:  # interpolations such as ${paths.data_root} resolve against the run
            raw = OmegaConf.merge(OmegaConf.create(resolve_with), {"_entry": raw})._entry
            raw = OmegaConf.create(OmegaConf.to_container(raw, resolve=True))
        entries[path.stem] = merge_typed(schema(), OmegaConf.to_container(raw), key=f"{group}/{path.stem}")
    return entries


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The dotted keys (or group names, e.g. `method`) that command-line overrides set."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return [o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))]


def to_run_config(cfg, overrides: Sequence[str] = ()):
    """The composed Hydra config as a validated `RunConfig`, with the command line's `method.*` overrides
    applied to the experiment's arms (s0.run.plan.apply_method_overrides). `overrides` are the command-line
    overrides this config was composed with; `plain` (written as each run's config.yaml) gets the same arms."""
    from omegaconf import OmegaConf

    from s0.run.config import RunConfig, validate
    from s0.run.plan import apply_method_overrides, merge_typed

    plain = OmegaConf.to_container(cfg, resolve=True)
    run_cfg = merge_typed(RunConfig(), plain, key="")
    validate(run_cfg)
    apply_method_overrides(run_cfg, override_keys(overrides))
    if "arms" in plain:
        plain["arms"] = copy.deepcopy(run_cfg.arms)
    return run_cfg, plain


def command_line() -> list[str]:
    """This job's command-line overrides as Hydra applied them. Read from Hydra rather than sys.argv because a
    sweep job (`-m method.alpha=0.1,0.2`) sees only its own values, also when a launcher runs it elsewhere."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def execute(cfg) -> None:
    from s0.run.config import MethodConfig, ModelConfig, TaskConfig
    from s0.run.plan import expand, format_plan

    overrides = command_line()
    run_cfg, plain = to_run_config(cfg, overrides)
    check_device(run_cfg.device, run_cfg.plan)
    context = {"paths": plain["paths"]}
    methods = load_group("method", MethodConfig)
    models = load_group("model", ModelConfig)
    tasks = load_group("task", TaskConfig, resolve_with=context)
    runs = expand(run_cfg, methods, models, tasks)
    print(summary(run_cfg, runs, overrides))
    if run_cfg.plan:
        print(format_plan(runs, run_cfg.gpu))
        return
    warn_cpu(run_cfg, runs)
    from s0.run.pipeline import run_all

    run_all(runs, run_cfg, resolved=plain)


# Rough CPU cost of real-size models, to warn before hours of work. Every figure is an assumption:
CPU_FLOPS = 1e11  # ~100 GFLOP/s of fp32 matmuls on a CPU
TRAIN_TOKENS_PER_EXAMPLE = 400  # prompt + verified solution
EVAL_PROBLEMS = {
    "humaneval": 84,
    "math500": 250,
    "gsm8k": 1319,
    "spider": 1034,
}  # eval splits when n_eval is null


def cpu_hours(runs, results: str) -> float:
    """Hours the unfinished `runs` would take on a CPU: 2 x params FLOPs per generated token (collection and
    evaluation), 6 x params per trained token (forward and backward), at CPU_FLOPS."""
    from s0.run import records

    flops, collected = 0.0, set()
    for r in runs:
        if records.is_done(Path(results) / r.run_id):
            continue
        params = (r.model.params_b or 1.0) * 1e9
        n_eval = r.eval_task.n_eval or EVAL_PROBLEMS.get(r.eval_task.name, 500)
        tokens = n_eval * (r.eval.samples if r.eval.mode == "sampled" else 1) * r.eval.max_new_tokens
        if r.method.name != "baseline":
            key = (r.model.name, r.seed, r.task.name)
            n_train = r.task.n_train or 200
            if key not in collected:
                collected.add(key)
                tokens += n_train * r.collect.samples * r.collect.max_new_tokens
            examples = min(n_train, r.method.max_train_examples or n_train)
            tokens += 3 * r.method.steps * examples * TRAIN_TOKENS_PER_EXAMPLE
        flops += 2 * params * tokens
    return flops / CPU_FLOPS / 3600


def warn_cpu(cfg, runs) -> None:
    """A real-size model about to run on the CPU gets a warning with a rough time, and the way to a quick run."""
    big = sorted(
        {f"{r.model.name} ({r.model.params_b or '?'}B)" for r in runs if not r.model.name.startswith("tiny_")}
    )
    if not big or cfg.device not in ("cpu", "auto"):
        return
    if cfg.device == "auto":
        import torch

        if torch.cuda.is_available():
            return
    hours = cpu_hours(runs, cfg.paths.results)
    if hours > 0:
        print(
            f"warning: {', '.join(big)} on the CPU: roughly {hours:,.0f} hours for the unfinished runs (assuming "
            f"{CPU_FLOPS:.0e} FLOP/s, 2 x params FLOPs per generated token, 6 x per trained one); debug=smoke "
            "runs the same pipeline on tiny models in minutes",
            file=sys.stderr,
        )


def summary(cfg, runs, overrides: Sequence[str] = ()) -> str:
    """One screen: what will run, where results go, and the protocol knobs that matter most."""
    from s0.run.plan import method_override_targets

    # Read from the runs, not from cfg: smoke mode swaps the models and caps the budgets after composition.
    models = ", ".join(sorted({f"{r.model.name} ({r.model.weights} weights)" for r in runs}))
    if cfg.smoke:
        models += f"; smoke stand-in for {', '.join(cfg.models or [cfg.model.name])}"
    decoding = "; ".join(
        sorted({f"{_mode(r.eval)}, {r.eval.max_new_tokens} new tokens, pass@{r.eval.ks}" for r in runs})
    )
    arms = list(dict.fromkeys(r.arm for r in runs))
    seeds = list(dict.fromkeys(r.seed for r in runs))
    lines = [
        f"experiment  {cfg.experiment or '(none)'}  [{cfg.paper_ref or 'ad hoc'}]"
        + ("  SMOKE" if cfg.smoke else ""),
        f"models      {models}",
        f"task        {cfg.task.name} -> {', '.join(cfg.eval_tasks or [cfg.task.name])}",
        f"arms        {', '.join(arms)}",
        f"seeds       {', '.join(map(str, seeds))}",
        f"decoding    {decoding}",
        f"results     {cfg.paths.results}",
        f"runs        {len(runs)}",
    ]
    for key, targets in method_override_targets(cfg, override_keys(overrides)).items():
        planned = [t for t in targets if t in arms] or ["no planned arm"]
        lines.append(f"override    method.{key}={getattr(cfg.method, key)} -> {', '.join(planned)}")
    return "\n".join(lines)


def _mode(evalc) -> str:
    return f"sampled x{evalc.samples} at T={evalc.temperature}" if evalc.mode == "sampled" else evalc.mode


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `python run.py --help | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
