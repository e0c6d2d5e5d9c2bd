"""Expand an experiment config into the concrete runs it implies (model x arm x seed x eval task).

A run is identified by a hash of exactly the fields that determine its result, so two experiments that
imply the same run (main_qwen's 4B S0 seeds and scaling's 4B point, say) share one run directory and a
rerun of a sweep finds finished runs by name (DomainBed style).

    runs = expand(cfg, methods={"s0": MethodConfig(...), ...}, models={"qwen3_5_4b": ModelConfig(...)},
                  tasks={"humaneval": TaskConfig(...)})
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from s0.models import TINY_ARCH, n_recurrent_layers
from s0.run.config import (
    METHOD_KEYS,
    SELECTION_HELDOUT,
    CollectConfig,
    ConfigError,
    EvalConfig,
    LimitConfig,
    MethodConfig,
    ModelConfig,
    ProtocolConfig,
    RunConfig,
    TaskBudget,
    TaskConfig,
    validate_layers,
    validate_method,
    validate_model_method,
)

# Bump when the meaning of a run changes without its config changing (a fixed bug in training, say):
# every run id changes with it, so stale results are never mixed with new ones.
PLAN_VERSION = 1


@dataclass(frozen=True)
class SelectionSplit:
    """Where a best-of-grid arm is selected (selection.split, issue 12), as it applies to one run.

    split "" (no selection rule, or the baseline, which trains nothing and is shared by both splits), "eval" (the
    paper's way: select on the evaluated problems), or "heldout": the last `heldout` training problems are kept
    out of this run's collection, and a selection arm (`evaluate`) is also evaluated on them."""

    split: str = ""
    heldout: int = 0
    evaluate: bool = False


@dataclass(frozen=True)
class PlannedRun:
    """One concrete run: everything that determines its result, and nothing else."""

    experiment: str | None
    arm: str
    seed: int
    model: ModelConfig
    method: MethodConfig
    task: TaskConfig  # where training data comes from
    eval_task: TaskConfig  # what is evaluated
    collect: CollectConfig
    eval: EvalConfig
    # the protocol the run was planned under (conf/protocol/); its budgets and HumanEval prompt are already
    # applied to collect, eval and the task configs
    protocol: ProtocolConfig = dataclasses.field(default_factory=ProtocolConfig)
    selection: SelectionSplit = dataclasses.field(default_factory=SelectionSplit)

    def key(self) -> dict[str, Any]:
        """The fields hashed into the run id (the experiment name and arm label are not among them)."""
        key = {
            "plan_version": PLAN_VERSION,
            "seed": self.seed,
            "model": _model_key(self.model),
            "method": dataclasses.asdict(self.method),
            "eval_task": dataclasses.asdict(self.eval_task),
            "eval": dataclasses.asdict(self.eval),
            # every run belongs to one protocol, so its records never carry another's label
            "protocol": self.protocol.name,
        }
        if self.method.name != "baseline":  # the baseline trains nothing, so its data does not matter
            key["task"] = dataclasses.asdict(self.task)
            key["collect"] = dataclasses.asdict(self.collect)
            key["train_target"] = [self.protocol.train_target, self.protocol.train_eos]
            if self.selection.heldout:  # trained without the selection slice: never the split=eval run
                key["selection"] = dataclasses.asdict(self.selection)
        return key

    @property
    def run_id(self) -> str:
        return config_hash(self.key())

    def describe(self) -> str:
        """The hyperparameters that distinguish this arm, for plan listings and logs."""
        m = self.method
        parts = {
            "baseline": [],
            "s0": [f"alpha={m.alpha}", f"mode={m.alpha_mode}"],
            "state_offset": [f"alpha={m.alpha}", f"mode={m.alpha_mode}"],
            "lora": [f"r={m.r}", f"lora_alpha={m.lora_alpha or 2 * m.r}", f"merge={m.merge}"],
            "prefix": [f"tokens={m.num_virtual_tokens}", f"projection={m.prefix_projection}"]
            + ([f"encoder_hidden={m.encoder_hidden_size}"] if m.encoder_hidden_size else []),
        }[m.name]
        if m.name != "baseline":
            parts += [f"lr={m.lr:g}", f"steps={m.steps}"]
        if m.layers is not None:
            parts.append(f"layers={_ranges(m.layers)}")
        if m.max_train_examples is not None:
            parts.append(f"n={m.max_train_examples}")
        if self.selection.heldout:
            evaluated = "+selection_eval" if self.selection.evaluate else ""
            parts.append(f"heldout={self.selection.heldout}{evaluated}")
        return " ".join(parts)


def config_hash(obj: Any, length: int = 12) -> str:
    """A stable short hash of a JSON-serialisable object (sorted keys, so dict order never matters)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _model_key(model: ModelConfig) -> dict[str, Any]:
    # Names, notes and sizes do not change results; the weights, architecture and precision do.
    keep = ("family", "hub_id", "revision", "weights", "dtype", "arch", "lora_targets")
    key = {k: getattr(model, k) for k in keep}
    if model.weights != "hub":  # random weights tokenize with the proxy or the tiny tokenizer: other prompts
        key["tokenizer"] = choose_tokenizer(model)
    return key


def is_tiny_model(m) -> bool:
    return m.name.startswith("tiny_")


def resolved_arch(m) -> dict[str, Any] | None:
    """The architecture fields of ModelConfig `m`: its own, or its family's tiny one for a tiny model."""
    from s0.models import TINY_ARCH

    return m.arch or (TINY_ARCH[m.family] if is_tiny_model(m) else None)


def choose_tokenizer(m) -> str:
    """The tokenizer kind for ModelConfig `m` (hub, proxy or tiny), from its config alone: no weights built.

    Random-weight real-size models get the Qwen3 proxy where their vocabulary holds its ids, so their prompts
    are as long in tokens as the real model's (the byte-level tiny tokenizer makes them about 3.5x longer)."""
    from s0.models.build import build_config, tokenizer_kind

    arch = resolved_arch(m)
    vocab = build_config(m.family, arch).vocab_size if arch is not None else None
    return tokenizer_kind(m.tokenizer, m.weights, is_tiny_model(m), vocab)


def _ranges(xs: list[int]) -> str:
    return f"{min(xs)}-{max(xs)}" if list(xs) == list(range(min(xs), max(xs) + 1)) else ",".join(map(str, xs))


def merge_typed(schema: Any, *overrides: dict[str, Any], key: str) -> Any:
    """Overlay plain dicts on a dataclass instance with OmegaConf's type checks; errors name `key`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), *[OmegaConf.create(o) for o in overrides])
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        full_key = ".".join(k for k in (key, getattr(err, "full_key", "") or "") if k)
        raise ConfigError(f"{full_key}: {str(err).splitlines()[0]}") from err


def apply_method_overrides(cfg: RunConfig, given: list[str]) -> dict[str, list[str]]:
    """Make command-line `method.*` overrides mean what they say; returns {key: the arms it went to}.

    `given` holds the dotted keys set on the command line (Hydra's task overrides of this job; `method` for the
    group choice `method=<name>`); the values are read from the composed `cfg.method`. The rule:

    - `method.name` is refused everywhere: `method=<name>` chooses a method together with its defaults.
    - Without `arms`, `cfg.method` is the run's method; a `method.<key>` it does not read (METHOD_KEYS in
      s0/run/config.py) is refused.
    - With `arms`, every arm names its own method and the `method` group is not used, so:
      - `method.<key>=v` sets <key> on every arm whose method reads it, over the arm's value in the experiment
        file (`method.alpha` goes to the s0 and state_offset arms, `method.lr` to every trained arm). The
        change is in `cfg.arms`, hence in the plan, the run id and the run's config.yaml. An `arms.<arm>.<key>`
        (or a whole `arms.<arm>`) also given on the command line is more specific and wins for that arm. The
        override also replaces the arm's `per_model` values of <key> (expressiveness' per-model LoRA ranks).
        A key that no arm reads is refused.
      - `method=<name>` is accepted only when every trained arm already uses <name> (it then changes nothing);
        otherwise it is refused with a pointer to `arm=<arm>` and `arms.<arm>.method=<name>`.
    - Two arms made equal by an override (`method.lr` over an lr grid) are refused by `expand`.
    """
    targets = method_override_targets(cfg, given)
    if cfg.arms:
        for key, arms in targets.items():
            for arm in arms:
                cfg.arms[arm][key] = copy.deepcopy(getattr(cfg.method, key))
                for fields in (cfg.arms[arm].get("per_model") or {}).values():
                    fields.pop(key, None)  # the file's per-model value would otherwise beat the command line
    return targets


def method_override_targets(cfg: RunConfig, given: list[str]) -> dict[str, list[str]]:
    """{key: arms} for every command-line `method.<key>` (see apply_method_overrides); changes nothing."""
    keys = [k.split(".", 1)[1] for k in given if k.startswith("method.")]
    if "name" in keys:
        raise ConfigError(
            "method.name: choose a method with method=<name> (it loads conf/method/<name>.yaml)"
        )
    if not cfg.arms:
        unread = [k for k in keys if k not in METHOD_KEYS[cfg.method.name]]
        if unread:
            raise ConfigError(f"method.{unread[0]}: method '{cfg.method.name}' does not use {unread[0]}")
        return {k: [cfg.method.name] for k in keys}
    methods = {arm: fields.get("method") for arm, fields in cfg.arms.items()}
    label = f"experiment '{cfg.experiment}'" if cfg.experiment else "these arms"
    if "method" in given and {m for m in methods.values() if m != "baseline"} != {cfg.method.name}:
        raise ConfigError(
            f"method={cfg.method.name}: {label} gives each arm its method "
            f"({', '.join(sorted(set(map(str, methods.values()))))}); "
            "pick arms with arm=<arm> or change one with arms.<arm>.method=<name>"
        )
    targets = {}
    for key in keys:
        readers = [arm for arm, m in methods.items() if key in METHOD_KEYS.get(m, ())]
        if not readers:
            listing = ", ".join(f"{arm}={m}" for arm, m in methods.items())
            raise ConfigError(f"method.{key}: no arm of {label} uses {key} (arms: {listing})")
        explicit = set(given)  # the command line's own arms.<arm>[.<key>] is more specific
        targets[key] = [a for a in readers if not {"arms", f"arms.{a}", f"arms.{a}.{key}"} & explicit]
    return targets


def resolve_arms(
    cfg: RunConfig, methods: dict[str, MethodConfig], model_name: str | None = None
) -> dict[str, MethodConfig]:
    """Each arm's full method config: conf/method/<name>.yaml with the arm's fields on top, then the arm's
    `per_model: {<model>: {<field>: <value>}}` entry for `model_name` (a LoRA rank matched to each model's S0
    count in a multi-model experiment, experiment=expressiveness; `expand` refuses a key that names no model in
    conf/model/, so a misspelt name cannot silently leave the arm's default in place)."""
    if not cfg.arms:
        return {cfg.method.name: cfg.method}
    resolved = {}
    for arm, fields in cfg.arms.items():
        fields = dict(fields)
        name = fields.pop("method", None)
        per_model = dict(fields.pop("per_model", None) or {})
        if name not in methods:
            raise ConfigError(f"arms.{arm}.method: '{name}' is not one of {', '.join(sorted(methods))}")
        method = merge_typed(methods[name], fields, dict(per_model.get(model_name) or {}), key=f"arms.{arm}")
        validate_method(method, key=f"arms.{arm}")
        resolved[arm] = method
    return resolved


def apply_protocol(run: PlannedRun, cfg: RunConfig) -> PlannedRun:
    """The protocol's per-task budgets on collection (training task) and evaluation (eval task), and its
    HumanEval prompt on HumanEval task configs. A budget the protocol sets replaces the common collect.* /
    eval.* value; a common value changed from its default would then do nothing, so that is refused."""
    p = cfg.protocol
    train, evalb = getattr(p, run.task.name), getattr(p, run.eval_task.name)
    collect = dataclasses.replace(
        run.collect,
        samples=_budget(cfg, "collect.samples", run.task.name, "collect_samples", train),
        max_new_tokens=_budget(cfg, "collect.max_new_tokens", run.task.name, "max_new_tokens", train),
    )
    evalc = dataclasses.replace(
        run.eval,
        max_new_tokens=_budget(cfg, "eval.max_new_tokens", run.eval_task.name, "max_new_tokens", evalb),
    )
    return dataclasses.replace(
        run,
        task=_with_prompt(run.task, p),
        eval_task=_with_prompt(run.eval_task, p),
        collect=collect,
        eval=evalc,
    )


def _budget(cfg: RunConfig, key: str, task: str, field: str, budget: TaskBudget) -> int:
    section, name = key.split(".")
    common = getattr(getattr(cfg, section), name)
    value = getattr(budget, field)
    if value is None:
        return common
    default = getattr(CollectConfig() if section == "collect" else EvalConfig(), name)
    if common != default and common != value:
        raise ConfigError(
            f"{key}={common} does not reach {task} runs: protocol '{cfg.protocol.name}' sets "
            f"protocol.{task}.{field}={value}; override that key instead"
        )
    return value


def _with_prompt(task: TaskConfig, protocol: ProtocolConfig) -> TaskConfig:
    """The protocol's user message for this task (protocol.<task>_prompt), unless task.prompt_template is set."""
    if task.prompt_template is not None:
        return task
    return dataclasses.replace(task, prompt_template=getattr(protocol, f"{task.name}_prompt"))


def describe_protocol(p: ProtocolConfig) -> str:
    """The protocol's name and values, one line (plan listings)."""
    budgets = []
    for task in ("humaneval", "math500", "gsm8k", "spider"):
        b = getattr(p, task)
        parts = ([f"{b.collect_samples} samples"] if b.collect_samples else []) + (
            [f"{b.max_new_tokens} tokens"] if b.max_new_tokens else []
        )
        if parts:
            budgets.append(f"{task} {' x '.join(parts)}")
    m = p.math500
    prompts = {t: getattr(p, f"{t}_prompt") for t in ("humaneval", "math500", "gsm8k", "spider")}
    return (
        f"protocol {p.name}: {' '.join(f'{t} prompt={v},' for t, v in prompts.items())} "
        f"train targets={p.train_target}"
        f"{' + EOS' if p.train_eos else ', no EOS'}, budgets: {', '.join(budgets) or 'common collect/eval'}; "
        f"math500 seeds {m.seed_sweep}, alpha {m.alpha} ({m.alpha_mode}); spider alpha mode {p.spider.alpha_mode}"
    )


def apply_selection(run: PlannedRun, cfg: RunConfig) -> PlannedRun:
    """selection.split (issue 12, validated in s0.run.config.validate_selection): `eval` (default) selects the best
    grid point on the evaluated problems, as the paper does (Sec 4.3); `heldout` keeps the last
    selection.heldout training problems out of every trained arm's collection and evaluates the selection arms
    on them as well. The baseline trains nothing, so one baseline run serves both splits."""
    sel = cfg.selection or {}
    if not sel.get("arms") or run.method.name == "baseline":  # no selection rule in this experiment
        return run
    split = str(sel.get("split", "eval"))
    if split != "heldout":
        return dataclasses.replace(run, selection=SelectionSplit(split))
    n = int(sel.get("heldout", SELECTION_HELDOUT))
    return dataclasses.replace(run, selection=SelectionSplit(split, n, run.arm in sel.get("arms", [])))


def describe_selection(runs: list[PlannedRun]) -> str | None:
    """The plan's selection line (plan=true): which split the best grid point is selected on."""
    splits = {r.selection.split for r in runs} - {""}
    if not splits:
        return None
    if splits == {"eval"}:
        return "selection split=eval: best config selected on the evaluated problems (as the paper, Sec 4.3)"
    n = max(r.selection.heldout for r in runs)
    arms = sorted({r.arm for r in runs if r.selection.evaluate})
    where = f" (HumanEval {80 - n}-79)" if {r.task.name for r in runs} == {"humaneval"} else ""  # train: 0-79
    return (f"selection split=heldout: the last {n} training problems{where} are held out of every trained arm's "
            f"collection; selection arms {', '.join(arms) or 'none planned'} are also evaluated on them")  # fmt: skip


def apply_limits(run: PlannedRun, limit: LimitConfig) -> PlannedRun:
    """Cap problems, steps, samples and tokens (debug=smoke); None leaves a value as it is."""

    def cap(value: int | None, bound: int | None) -> int | None:
        if bound is None:
            return value
        return bound if value is None else min(value, bound)

    method = dataclasses.replace(run.method, steps=cap(run.method.steps, limit.steps))
    task = dataclasses.replace(run.task, n_train=cap(run.task.n_train, limit.n_train))
    eval_task = dataclasses.replace(run.eval_task, n_eval=cap(run.eval_task.n_eval, limit.n_eval))
    collect = dataclasses.replace(
        run.collect,
        samples=cap(run.collect.samples, limit.samples),
        max_new_tokens=cap(run.collect.max_new_tokens, limit.max_new_tokens),
    )
    evalc = dataclasses.replace(run.eval, max_new_tokens=cap(run.eval.max_new_tokens, limit.max_new_tokens))
    if evalc.mode == "sampled" and limit.samples is not None:
        # keep pass@k computable: fewer samples, and only the k values they support
        evalc = dataclasses.replace(evalc, samples=max(min(evalc.samples, limit.samples), 1))
        evalc = dataclasses.replace(evalc, ks=[k for k in evalc.ks if k <= evalc.samples] or [1])
    return dataclasses.replace(
        run, method=method, task=task, eval_task=eval_task, collect=collect, eval=evalc
    )


def expand(
    cfg: RunConfig,
    methods: dict[str, MethodConfig],
    models: dict[str, ModelConfig],
    tasks: dict[str, TaskConfig],
) -> list[PlannedRun]:
    """Every concrete run of `cfg`, after the `seed` and `arm` filters, in a stable order.

    `methods`, `models` and `tasks` are the conf/ group entries by name (the runner loads them).
    """
    arms = resolve_arms(cfg, methods)
    if cfg.arm is not None and cfg.arm not in arms:
        raise ConfigError(f"arm: '{cfg.arm}' is not an arm of this experiment ({', '.join(arms)})")
    model_names = cfg.models or [cfg.model.name]
    for name in model_names:
        if name not in models:
            raise ConfigError(f"models: unknown model '{name}'; known: {', '.join(sorted(models))}")
    for arm, fields in cfg.arms.items():
        for name in fields.get("per_model") or {}:
            if name not in models:
                raise ConfigError(
                    f"arms.{arm}.per_model: unknown model '{name}'; known: {', '.join(sorted(models))}"
                )
    eval_names = cfg.eval_tasks or [cfg.task.name]
    runs = []
    for model_name in model_names:
        model = cfg.model if model_name == cfg.model.name and not cfg.models else models[model_name]
        n_full = n_recurrent_layers(model.family, model.arch)
        if cfg.smoke:
            model = tiny_counterpart(model, models)
        seeds = cfg.seeds_per_model.get(model_name, cfg.seeds)
        if cfg.seed is not None:
            seeds = [cfg.seed]
        n_rec = n_recurrent_layers(model.family, model.arch)
        arms = resolve_arms(cfg, methods, model_name)  # with the arms' per_model fields for this model
        if cfg.arm is not None:
            arms = {cfg.arm: arms[cfg.arm]}
        for arm, method in arms.items():
            layers_key = f"arms.{arm}.layers" if cfg.arms else "method.layers"
            if cfg.smoke and method.layers and n_rec < n_full:
                # checked on the real model first: scaling would fold an out-of-range index into range
                validate_layers(method.layers, n_full, model_name, key=layers_key)
                method = dataclasses.replace(method, layers=scale_layers(method.layers, n_full, n_rec))
            validate_model_method(model, method, key=f"arms.{arm}" if cfg.arms else "method")
            validate_layers(method.layers, n_rec, model.name, key=layers_key)
            for seed in seeds:
                for eval_name in eval_names:
                    eval_task = cfg.task if eval_name == cfg.task.name else tasks[eval_name]
                    run = PlannedRun(cfg.experiment, arm, seed, model, method, cfg.task, eval_task, cfg.collect,
                                     cfg.eval, cfg.protocol)  # fmt: skip
                    runs.append(apply_selection(apply_limits(apply_protocol(run, cfg), cfg.limit), cfg))
    check_distinct_arms(runs)
    return runs


def check_distinct_arms(runs: list[PlannedRun]) -> None:
    """Two arms that plan the same run would share one directory, and the second would be skipped as done
    under the first one's label (`method.lr=...` over main_qwen's lr grid, say)."""
    arm_of: dict[str, str] = {}
    for r in runs:
        other = arm_of.setdefault(r.run_id, r.arm)
        if other != r.arm:
            raise ConfigError(
                f"arms: '{other}' and '{r.arm}' are the same run ({r.run_id}: {r.describe()}); "
                f"keep one with arm=<arm> or set them apart with arms.<arm>.<key>"
            )


def scale_layers(layers: list[int], n_from: int, n_to: int) -> list[int]:
    """Map layer positions onto a model with fewer recurrent layers, keeping early/middle/late groups apart."""
    return sorted({i * n_to // n_from for i in layers})


def tiny_counterpart(model: ModelConfig, models: dict[str, ModelConfig]) -> ModelConfig:
    """The tiny model of the same family, with its architecture filled in from s0.models.TINY_ARCH."""
    if not model.tiny or model.tiny not in models:
        raise ConfigError(f"model.tiny: '{model.name}' names no tiny counterpart in conf/model/")
    tiny = models[model.tiny]
    return dataclasses.replace(tiny, arch=tiny.arch or dict(TINY_ARCH[tiny.family]))


def format_plan(runs: list[PlannedRun], gpu: str | None = None) -> str:
    """The protocol of the runs, then a fixed-width listing, one line per run, then each run's estimated GPU
    time on GPU class `gpu` (s0/run/cost.py)."""
    header = f"{'#':>4}  {'run_id':12}  {'model':20} {'task':22} {'arm':18} {'seed':>5}  hyperparameters"
    protocols = list(dict.fromkeys(describe_protocol(r.protocol) for r in runs))
    selection = describe_selection(runs)
    lines = [*protocols, *([selection] if selection else []), header, "-" * len(header)]
    for i, r in enumerate(runs, 1):
        task = r.task.name if r.task.name == r.eval_task.name else f"{r.task.name}->{r.eval_task.name}"
        lines.append(
            f"{i:>4}  {r.run_id}  {r.model.name:20} {task:22} {r.arm:18} {r.seed:>5}  {r.describe()}"
        )
    from s0.run.cost import plan_text

    lines.append(plan_text(runs, gpu))
    return "\n".join(lines)
