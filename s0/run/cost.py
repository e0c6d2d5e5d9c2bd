"""The GPU time a plan will take, before anything runs (`plan=true`, `make plan`; issue 13).

Each run's work is counted in tokens from the plan:

    collection  n_train problems x collect.samples x collect.max_new_tokens, once per (model, seed, task,
                collect): the arms of a seed share it, as they share the pipeline's collection cache
    training    steps x examples x tokens per example; examples <= n_train (at most one kept per problem), tokens
                per example = the measured mean prompt + the whole collect.max_new_tokens (an upper bound)
    evaluation  n_eval problems x eval.samples x eval.max_new_tokens; baselines share one as in the eval cache

and divided by throughputs measured on the GPU box, read from benchmarks/results/*.json (never constants here):

    decoding    eval_throughput.json: decode tokens/s at batch `rows` of the run's engine (eval.engine=hf:
                `hf_batched`; auto and static, the CUDA default: the static CUDA-graph engine)
    training    train_cost.json: tokens/s of the fastest batched mode for the run's method; without that file,
                a third of the measured prefill rate (forward + backward ~ 3 forwards), marked 'derived'

Every row is counted at its full token budget (no early EOS) and prefill is left out. Time per token scales
with the model's parameters relative to the measured model's (weights read per decode step, FLOPs per trained
token). A GPU class that was not measured gets the measured class's throughput times the ratio of their spec
memory bandwidths, and the estimate says 'scaled'.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from s0.run.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
# Spec memory bandwidth in GB/s (vendor data sheets: A10G 600 GB/s, A100 80GB 2.0 TB/s, H100 SXM 3.35 TB/s,
# H200 4.8 TB/s). Decoding is bandwidth-bound, so these scale a measurement to a class not measured.
BANDWIDTH_GBPS = {"a10g": 600.0, "a100": 2000.0, "h100": 3350.0, "h200": 4800.0}
DEFAULT_GPU = "h200"  # on a machine without a GPU
# Eval split sizes when task.n_eval is null (the bundled data; run.py's CPU warning uses the same numbers).
EVAL_PROBLEMS = {"humaneval": 84, "math500": 250, "gsm8k": 1319, "spider": 1034}
TRAIN_PROBLEMS = 200  # when task.n_train is null


class NoMeasurement(ConfigError):
    """benchmarks/results has no usable eval_throughput.json (an install without the repository's files)."""


@dataclass
class Throughput:
    """What the GPU box measured, in the units the estimate needs."""

    gpu: str  # class key of BANDWIDTH_GBPS
    device: str  # the name torch reported, e.g. "NVIDIA H100 80GB HBM3"
    source: str  # file names read
    params_b: float | None  # the measured model's size (billions)
    decode: dict[str, float] = field(default_factory=dict)  # engine -> decode tokens/s
    prefill: float | None = None  # prompt tokens/s of one prefill of the whole batch
    prompt_tokens: float | None = None  # mean prompt length of the measured prompts
    train: dict[str, float] = field(default_factory=dict)  # method -> trained tokens/s (train_cost.json)
    train_params_b: dict[str, float | None] = field(default_factory=dict)  # method -> its model's size


@dataclass
class Bill:
    gpu: str
    note: str  # where the numbers come from and how they were scaled
    rows: list[tuple[Any, float, float, float]]  # (run, collect_s, train_s, eval_s)

    def seconds(self) -> tuple[float, float, float]:
        return tuple(sum(r[i] for r in self.rows) for i in (1, 2, 3))  # type: ignore[return-value]

    @property
    def total_s(self) -> float:
        return sum(self.seconds())


def gpu_class(name: str) -> str | None:
    """The class key of a device name ("NVIDIA A100-SXM4-80GB" -> a100), None if not one of ours."""
    low = name.lower().replace(" ", "")
    for key in ("a10g", "a100", "h100", "h200"):
        if key in low:
            return key
    return None


def resolve_gpu(gpu: str | None) -> tuple[str, str]:
    """(class, how it was chosen): the one given, else the GPU present, else h200 (said so)."""
    if gpu is not None:
        if gpu not in BANDWIDTH_GBPS:
            raise ConfigError(f"gpu: '{gpu}' is not one of {', '.join(BANDWIDTH_GBPS)}")
        return gpu, f"gpu={gpu}"
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        found = gpu_class(name)
        if found:
            return found, f"the GPU present, {name}"
        return DEFAULT_GPU, f"{name} is not a known class; gpu=a10g|a100|h100|h200 picks one"
    return DEFAULT_GPU, "no GPU here, so gpu=h200; gpu=a10g|a100|h100|h200 picks another"


def load_throughput(results: Path = RESULTS) -> Throughput:
    """eval_throughput.json (required) and train_cost.json (optional) from the GPU box."""
    path = results / "eval_throughput.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise NoMeasurement(f"no GPU measurement to estimate from ({path}: {err})") from err
    device = data["meta"]["gpu"]["name"]
    run = data.get("run", {})
    weights = [b["bytes"]["weights"] for b in run.get("bound", {}).values() if "bytes" in b]
    t = Throughput(
        gpu=gpu_class(device) or DEFAULT_GPU,
        device=device,
        source=path.name,
        params_b=weights[0] / 2e9 if weights else None,  # bf16: 2 bytes per parameter
    )
    engines = {k: v for k, v in run.get("engines", {}).items() if v and v.get("decode_tokens_per_s")}
    lengths = run.get("prompt_lengths", {})
    t.prompt_tokens = lengths.get("mean", lengths.get("median"))
    for engine, names in (("hf", ("hf_batched",)), ("static", ("engine", "static_graph"))):
        name = next((n for n in names if n in engines), None)
        if name is None:
            continue
        e = engines[name]
        t.decode[engine] = e["decode_tokens_per_s"]
        if engine == "static" and e.get("t_1_token_s") and t.prompt_tokens:
            t.prefill = e["rows"] * t.prompt_tokens / e["t_1_token_s"]
    if not t.decode:
        raise NoMeasurement(f"{path} holds no decode throughput")
    train_path = results / "train_cost.json"
    if train_path.exists():
        t.source += f", {train_path.name}"
        for key, rec in json.loads(train_path.read_text()).items():
            if not isinstance(rec, dict) or not rec.get("tokens") or not rec.get("rows"):
                continue
            steps = [
                r["median_step_s"]
                for r in rec["rows"]
                if r.get("median_step_s") and r["mode"] != "per_example"
            ]
            method, _, model = key.partition("_")
            method = "lora" if method.startswith("lora") else method
            if steps and rec["tokens"] / min(steps) > t.train.get(method, 0):
                t.train[method] = rec["tokens"] / min(steps)
                t.train_params_b[method] = model_params_b(model)
    return t


def model_params_b(name: str) -> float | None:
    """params_b of conf/model/<name>.yaml (the size of a model train_cost.json measured)."""
    from omegaconf import OmegaConf

    path = ROOT / "conf" / "model" / f"{name}.yaml"
    return OmegaConf.load(path).get("params_b") if path.exists() else None


def _size(params_b: float | None, measured_b: float | None) -> float:
    """Time per token of a model relative to the measured one's."""
    return params_b / measured_b if params_b is not None and measured_b else 1.0


def estimate(runs: list, gpu: str | None = None, results: Path = RESULTS) -> Bill:
    """Seconds of collection, training and evaluation per run of `runs` (PlannedRun) on GPU class `gpu`."""
    target, chosen = resolve_gpu(gpu)
    t = load_throughput(results)
    speed = BANDWIDTH_GBPS[target] / BANDWIDTH_GBPS[t.gpu]
    how = "measured there" if target == t.gpu else f"bandwidth-scaled x{speed:.2f} from {t.gpu}: scaled"
    train_note = ", training derived from prefill (no train_cost.json)" if not t.train else ""
    note = (f"{target.upper()} ({chosen}); throughputs from benchmarks/results/{{{t.source}}} on {t.device}, "
            f"{how}{train_note}; full token budgets, no early stop: an estimate")  # fmt: skip
    seen_collect, seen_eval, rows = set(), set(), []
    for r in runs:
        size = _size(r.model.params_b, t.params_b)
        engine = "hf" if r.eval.engine == "hf" else "static"
        decode = t.decode.get(engine) or next(iter(t.decode.values()))
        per_token = size / (decode * speed)
        collect_s = train_s = eval_s = 0.0
        if r.method.name != "baseline":
            n_train = r.task.n_train or TRAIN_PROBLEMS
            key = json.dumps([r.key()["model"], asdict(r.task), asdict(r.collect), r.seed], sort_keys=True)
            if key not in seen_collect:
                seen_collect.add(key)
                collect_s = n_train * r.collect.samples * r.collect.max_new_tokens * per_token
            examples = min(n_train, r.method.max_train_examples or n_train)
            tokens = r.method.steps * examples * ((t.prompt_tokens or 0) + r.collect.max_new_tokens)
            train_s = tokens * train_seconds_per_token(t, r, speed)
        samples = r.eval.samples if r.eval.mode == "sampled" else 1
        n_eval = r.eval_task.n_eval or EVAL_PROBLEMS.get(r.eval_task.name, 500)
        seed = r.seed if r.eval.mode == "sampled" else None  # greedy: one baseline evaluation for every seed
        key = json.dumps([r.key()["model"], asdict(r.eval_task), asdict(r.eval), seed], sort_keys=True)
        if r.method.name != "baseline" or key not in seen_eval:
            seen_eval.add(key)
            eval_s = n_eval * samples * r.eval.max_new_tokens * per_token
        rows.append((r, collect_s, train_s, eval_s))
    return Bill(target, note, rows)


def train_seconds_per_token(t: Throughput, run: Any, speed: float) -> float:
    """From trained tokens/s for `run`: its method's measurement (else any method's), else prefill / 3."""
    method = "lora" if run.method.name == "lora" else "s0"
    if t.train:
        rate = t.train.get(method) or max(t.train.values())
        measured_b = t.train_params_b.get(method) if method in t.train else None
    else:
        rate, measured_b = (t.prefill or min(t.decode.values())) / 3, t.params_b
    return _size(run.model.params_b, measured_b) / (rate * speed)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.2f} h" if seconds >= 36 else ("0" if seconds == 0 else f"{seconds:.0f} s")


def plan_text(runs: list, gpu: str | None = None, results: Path = RESULTS) -> str:
    """The bill of `runs` for a plan listing; without a measurement, one line saying so (the plan still prints)."""
    try:
        return format_bill(estimate(runs, gpu, results))
    except NoMeasurement as err:
        return f"GPU time: not estimated, {err}"


def format_bill(bill: Bill, label: str = "experiment") -> str:
    """One line per run (collection, training, evaluation, total), then the total."""
    header = f"{'run_id':12}  {'collect':>9} {'train':>9} {'eval':>9} {'total':>9}"  # in the listing's order
    lines = [f"GPU time on {bill.note}", header, "-" * len(header)]
    for r, c, tr, e in bill.rows:
        lines.append(f"{r.run_id:12}  {hours(c):>9} {hours(tr):>9} {hours(e):>9} {hours(c + tr + e):>9}")
    lines.append(total_line(bill, label))
    return "\n".join(lines)


def total_line(bill: Bill, label: str) -> str:
    c, tr, e = bill.seconds()
    days = f", {bill.total_s / 86400:.1f} GPU-days" if bill.total_s >= 86400 else ""
    return (f"{label}: {len(bill.rows)} runs, {hours(bill.total_s)} of GPU time on one {bill.gpu.upper()}{days} "
            f"(collection {hours(c)}, training {hours(tr)}, evaluation {hours(e)})")  # fmt: skip
