"""Training cost: the reference-style per-example loop against the harness's batched loops, side by side.

    python -m benchmarks.train_cost                          # GPU defaults: S0 on Qwen3.5-4B and FalconH1-7B, LoRA r24
    python -m benchmarks.train_cost --steps 20 --ref-steps 20   # the full 20-step runs (minutes)
    python -m benchmarks.train_cost --tiny                   # CPU smoke run

Per config: 48 sequences with HumanEval lengths (benchmarks/common.py: prompt = chat-rendered train problems,
completion = canonical body + fence, 50-300 tokens), random token ids, `s0.train.train` with the paper's
hyperparameters (App A: S0 lr 1e-3, LoRA lr 5e-4, L2 5e-4 for S0, clip 1.0), and each batching mode:

    per_example  one forward/backward per example (the reference loop), `--ref-steps` steps
    padded       length-sorted micro-batches of `--micro-batch`, right padded, `--steps` steps
    packed       micro-batches filled up to `--max-tokens` tokens, `--steps` steps
(both batched modes keep to the token budget; default auto: s0.train measures the memory per token and fills what
the cap leaves)

Every mode starts from the same initial adapter tensors, so the loss trajectories must agree (bf16 rounding aside).
The process is capped at `--cap-gib` (20 GiB: fits an A10G's 24 GB) with `torch.cuda.set_per_process_memory_fraction`,
so an OOM proves a mode does not fit. Gradient checkpointing per decoder layer (benchmarks.common.layer_checkpointing)
is used where `--checkpointing` says (default: the batched modes; every mode for FalconH1-7B, whose bf16 weights alone
take 14.1 GiB). Step times come from step boundaries (each step ends with a host read of the loss, a sync); the
per-step median is extrapolated to `--target-steps` (20, the paper's step count) and the speedup is the ratio of
medians measured in this process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    FAILURES,
    base_parser,
    build,
    cap_memory,
    cpu_threads,
    exit_code,
    free_memory,
    guarded,
    layer_checkpointing,
    log,
    md_table,
    metadata,
    peak_gib,
    random_ids,
    reset_peak,
    resolve_device,
    summarize,
    sync,
    train_lengths,
    uncap_memory,
    write_results,
)

NAME = "train_cost"
# config -> (method, model, adapter fields, lr, l2); App A Table 4.
CONFIGS: dict[str, tuple[str, str, dict[str, Any], float, float]] = {
    "s0_qwen3_5_4b": ("s0", "qwen3_5_4b", {"alpha": 0.07}, 1e-3, 5e-4),
    "s0_falcon_h1_7b": ("s0", "falcon_h1_7b", {"alpha": 0.65}, 1e-3, 5e-4),
    "lora_r24_qwen3_5_4b": (
        "lora",
        "qwen3_5_4b",
        {"r": 24, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "seed": 0},
        5e-4,
        0.0,
    ),
    "lora_r24_falcon_h1_7b": (
        "lora",
        "falcon_h1_7b",
        {
            "r": 24,
            "target_modules": ["q_proj", "k_proj", "v_proj", "in_proj"],
            "seed": 0,
        },  # conf/model/falcon_h1_7b
        5e-4,
        0.0,
    ),
}
HARNESS_MODES = ("padded", "packed")


def checkpoint_modes(policy: str, model_name: str, modes: list[str]) -> set[str]:
    if policy == "auto":
        policy = "all" if model_name == "falcon_h1_7b" else "harness"
    return {"none": set(), "harness": set(HARNESS_MODES), "all": set(modes)}[policy] & set(modes)


def run_mode(
    adapter, base_model, examples, mode: str, steps: int, lr: float, l2: float, args, device, ckpt: bool
):
    """Train `steps` steps in `mode`; returns timings, peak memory and the loss trajectory."""
    from s0.train import train

    stamps: list[float] = []

    def on_step(_: dict[str, Any]) -> None:
        stamps.append(time.perf_counter())  # train() has just read the loss and norms back: the step is done

    kwargs = dict(
        micro_batch_size=args.micro_batch, max_tokens=args.max_tokens, pad_token_id=0, progress=False
    )
    with layer_checkpointing(base_model) if ckpt else _null():
        reset_peak(device)
        sync(device)
        t0 = time.perf_counter()
        res = train(adapter, examples, steps=steps, lr=lr, l2=l2, grad_clip=1.0, batching=mode, seed=args.seed,
                    log_fn=on_step, **kwargs)  # fmt: skip
        sync(device)
    times = [b - a for a, b in zip([t0, *stamps[:-1]], stamps)]
    stats = summarize(times)
    return {
        "mode": mode,
        "steps": steps,
        "checkpointing": ckpt,
        "step_seconds": stats,
        "median_step_s": stats["median"],
        "first_step_s": times[0],
        "total_s": res.seconds,
        "peak_gib": peak_gib(device),
        "losses": res.losses,
        "grad_norms": res.grad_norms,
        "state_norms": res.state_norms,
        "completion_tokens": res.n_completion_tokens,
        "token_budget": res.token_budget,  # tokens per micro-batch and how they were chosen
    }


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def config_run(key: str, args, device: torch.device, out: dict[str, Any], save) -> dict[str, Any]:
    """Fill `out` for one config (model + method), calling `save()` after each batching mode."""
    from s0.backends import select_backends

    if key not in CONFIGS:
        raise ValueError(f"unknown config '{key}'; known: {', '.join(CONFIGS)}")
    method, model_name, fields, lr, l2 = CONFIGS[key]
    out.update(method=method, model=model_name, lr=lr, l2=l2, adapter_fields=fields)
    out["backends"] = {k: v for k, v in select_backends(device=device).items() if k != "reasons"}
    out["memory_cap"] = cap_memory(None if args.tiny else args.cap_gib, device)
    try:
        _measure(key, args, device, out, save)
    finally:
        free_memory()  # the model went out of scope with _measure's frame
        uncap_memory(device)
    return out


def _measure(key: str, args, device: torch.device, out: dict[str, Any], save) -> None:
    from s0.adapters import build_adapter
    from s0.train import TrainExample

    if key not in CONFIGS:
        raise ValueError(f"unknown config '{key}'; known: {', '.join(CONFIGS)}")
    method, model_name, fields, lr, l2 = CONFIGS[key]
    model = build(model_name, args.tiny, device, seed=args.seed)
    out["weights_gib"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    lengths = train_lengths(args.n, args.seed)
    if args.tiny:
        lengths = [(max(2, round(p * 0.1)), max(2, round(c * 0.1))) for p, c in lengths]
    vocab = model.config.vocab_size
    prompts = random_ids([p for p, _ in lengths], vocab, args.seed)
    comps = random_ids([c for _, c in lengths], vocab, args.seed + 1)
    examples = [TrainExample(p, c) for p, c in zip(prompts, comps)]
    out["n_examples"] = len(examples)
    out["tokens"] = sum(len(e.prompt_ids) + len(e.completion_ids) for e in examples)
    out["lengths"] = lengths
    adapter = build_adapter(method, model, **fields)
    out["trainable"] = adapter.num_trainable()
    init = [p.detach().clone() for p in adapter.parameters()]

    def restore() -> None:
        with torch.no_grad():
            for p, v in zip(adapter.parameters(), init):
                p.copy_(v)
                p.grad = None

    ckpt = checkpoint_modes(args.checkpointing, model_name, args.modes)
    out["checkpointing_modes"] = sorted(ckpt)
    runs: dict[str, Any] = {}
    out["runs"] = runs
    for mode in args.modes:
        steps = args.ref_steps if mode == "per_example" else args.steps

        def one(mode: str = mode, steps: int = steps) -> dict[str, Any]:
            # Warmup on 2 examples (cuBLAS handles, allocator, Triton/JIT), not timed; then a fresh start.
            try:
                warm = run_mode(adapter, model, examples[:2], mode, 1, lr, l2, args, device, mode in ckpt)
                restore()
                capped = None
                if mode == "per_example" and args.max_mode_s:
                    # The per-example step costs ~n x (one example); keep the slow reference loop inside its budget.
                    est = len(examples) * warm["total_s"] / 2
                    fit = max(1, int(args.max_mode_s // max(est, 1e-9)))
                    if fit < steps:
                        capped, steps = steps, fit
                        log(
                            f"{mode}: ~{est:.1f} s/step estimated, {steps} step(s) instead of {capped} (--max-mode-s)"
                        )
                r = run_mode(adapter, model, examples, mode, steps, lr, l2, args, device, mode in ckpt)
                r["steps_capped_from"] = capped
                return r
            finally:
                restore()  # every mode starts from the same tensors, also after a failure

        runs[mode] = guarded(out, f"run:{mode}", one)
        if runs[mode] is not None:
            out.pop(f"run:{mode}")
            r = runs[mode]
            log(f"{key} {mode}: {r['median_step_s']:.3f} s/step, peak {r['peak_gib'] or 0:.2f} GiB, "
                f"losses {[round(x, 4) for x in r['losses']]}")  # fmt: skip
        out.update(compare(runs, args))
        save()


def compare(runs: dict[str, Any], args) -> dict[str, Any]:
    """Speedups against the per-example loop, fit under the cap, and loss-trajectory agreement."""
    ref = runs.get("per_example")
    rows = []
    for mode, r in runs.items():
        if r is None:
            rows.append({"mode": mode, "error": "failed (see run:<mode>)"})
            continue
        row = {
            "mode": mode,
            "steps": r["steps"],
            "checkpointing": r["checkpointing"],
            "median_step_s": r["median_step_s"],
            "spread": r["step_seconds"]["spread"],
            f"est_{args.target_steps}_steps_s": r["median_step_s"] * args.target_steps,
            "peak_gib": r["peak_gib"],
            "under_cap": None if r["peak_gib"] is None else r["peak_gib"] <= args.cap_gib,
            "max_tokens": (r.get("token_budget") or {}).get("max_tokens"),
            "micro_batches": (r.get("token_budget") or {}).get("micro_batches"),
        }
        if ref is not None:
            row["speedup_vs_per_example"] = ref["median_step_s"] / r["median_step_s"]
            n = min(len(ref["losses"]), len(r["losses"]))
            diffs = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(r["losses"][:n], ref["losses"][:n])]
            row["loss_max_rel_diff"] = max(diffs) if diffs else None
            row["losses_equal"] = bool(diffs) and max(diffs) <= args.loss_rtol
        rows.append(row)
    best = [r for r in rows if r.get("speedup_vs_per_example") and r["mode"] != "per_example"]
    summary = {
        "rows": rows,
        "best_harness_mode": max(best, key=lambda r: r["speedup_vs_per_example"])["mode"] if best else None,
    }
    if best:
        top = max(best, key=lambda r: r["speedup_vs_per_example"])
        summary["meets_5x"] = top["speedup_vs_per_example"] >= 5.0
        summary["meets_memory"] = all(r.get("under_cap") is not False for r in rows if "error" not in r)
    return summary


def _tokens(value: str) -> int | None:
    return None if value == "auto" else int(value)


def main(argv: list[str] | None = None) -> int:
    ap = base_parser(__doc__.splitlines()[0])
    # no argparse `choices`: an unknown config is a failed config, recorded in the JSON with a non-zero exit
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), help=f"of: {' '.join(CONFIGS)}")
    ap.add_argument("--modes", nargs="+", default=["per_example", *HARNESS_MODES],
                    choices=["per_example", *HARNESS_MODES])  # fmt: skip
    ap.add_argument("--n", type=int, default=48, help="training sequences")
    ap.add_argument("--steps", type=int, default=3, help="steps of the batched modes")
    ap.add_argument("--ref-steps", type=int, default=2, help="steps of the per-example loop (slow)")
    ap.add_argument("--target-steps", type=int, default=20, help="extrapolate the per-step median to this")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--max-tokens", type=_tokens, default=None,
                    help="padded tokens per micro-batch (padded and packed); default auto: measured from the "
                    "memory left under the cap (s0.train.resolve_max_tokens)")  # fmt: skip
    ap.add_argument("--cap-gib", type=float, default=20.0, help="per-process CUDA memory cap; 0 = none")
    ap.add_argument("--checkpointing", default="auto", choices=["auto", "none", "harness", "all"])
    ap.add_argument("--max-mode-s", type=float, default=90.0,
                    help="cap the per-example loop's steps to about this many seconds (0 = no cap)")  # fmt: skip
    ap.add_argument("--loss-rtol", type=float, default=1e-2, help="loss trajectories 'equal' within this")
    args = ap.parse_args(argv)
    if args.tiny:
        args.n = min(args.n, 8)
        args.micro_batch = min(args.micro_batch, 4)
        args.max_tokens = min(args.max_tokens or 128, 128)
    device = resolve_device(args)
    FAILURES.clear()
    payload: dict[str, Any] = {"meta": metadata(argv, device), "name": NAME, "settings": vars(args)}

    def save(quiet: bool = True) -> None:
        write_results(args.out, NAME, payload, markdown(payload, args), quiet=quiet)

    with cpu_threads(1 if args.tiny else None):
        for key in args.configs:
            payload[key] = {}
            guarded(payload, key, lambda key=key: config_run(key, args, device, payload[key], save))
            save()
    save(quiet=False)
    return exit_code()


def markdown(payload: dict[str, Any], args) -> str:
    device = payload["meta"]["device"]
    md = [f"# Training cost ({payload['meta'].get('gpu', {}).get('name', device)})", ""]
    md.append(
        f"{args.n} sequences, per-example {args.ref_steps} steps, batched {args.steps} steps, "
        f"estimates for {args.target_steps} steps; cap {args.cap_gib} GiB"
    )
    cols = ["mode", "steps", "checkpointing", "median_step_s", "spread", f"est_{args.target_steps}_steps_s",
            "peak_gib", "under_cap", "max_tokens", "micro_batches", "speedup_vs_per_example", "loss_max_rel_diff", "losses_equal", "error"]  # fmt: skip
    for key in args.configs:
        res = payload.get(key) or {}
        md += ["", f"## {key}", ""]
        if "error" in res:
            md.append(f"FAILED: {res['error'][:300]}")
            continue
        md.append(
            f"trainable {res.get('trainable')}, {res.get('tokens')} tokens, checkpointing in "
            f"{res.get('checkpointing_modes')}; meets 5x: {res.get('meets_5x')}, fits cap: {res.get('meets_memory')}"
        )
        md += ["", md_table(res.get("rows", []), cols)]
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
