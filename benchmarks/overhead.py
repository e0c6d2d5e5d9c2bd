"""Inference overhead of each adaptation method (the table the paper implies but does not measure): per-token decode
latency and throughput at batch 1 and 84 on the Qwen3.5-4B architecture, and the cost of switching adapters.

    python -m benchmarks.overhead                   # GPU defaults (about 2-3 minutes)
    python -m benchmarks.overhead --repeats 5 --steps 32
    python -m benchmarks.overhead --tiny            # CPU smoke run

Configurations: base (no adapter), S0 active, state-offset active, LoRA r24 unmerged (peft branch on q,k,v,o), LoRA
r24 merged. Each measurement prefills a batch of `--prompt-len` random tokens (no padding; decode cost hardly depends
on the context length) into benchmarks.decode_loop.StaticGreedyDecoder, then times `--steps` greedy decode steps
queued back to back (mean step time), in two modes:
    eager   the model's Python forward per step (what HF generate runs, minus its loop overhead)
    graph   one step captured in a CUDA graph and replayed (launch overhead gone: GPU time only)
Configurations are interleaved round-robin for `--repeats` rounds, so drift hits all alike; ratios are medians over
rounds relative to base, measured in the same process. Expected: S0 / base = 1.00 +- noise (S0 is absorbed into
the state before the first decode step); state-offset and unmerged LoRA above 1. Whatever comes out is recorded.

Switching: S0 swap = copy another state set into the adapter (`S0Adapter.swap`, in memory and from a saved
directory); LoRA = `merge()` (saves the original weights, folds BA in) and `unmerge()` (restores them exactly).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    FAILURES,
    base_parser,
    build,
    cpu_threads,
    exit_code,
    fill_random,
    guarded,
    log,
    md_table,
    metadata,
    random_ids,
    resolve_device,
    summarize,
    sync,
    time_fn,
    write_results,
)
from benchmarks.decode_loop import StaticGreedyDecoder, left_pad

NAME = "overhead"
CONFIGS = ("base", "s0", "state_offset", "lora_unmerged", "lora_merged")
LORA_FIELDS = {"r": 24, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "seed": 0}


def config_contexts(model, s0, offset) -> dict[str, Callable[[], contextlib.AbstractContextManager]]:
    """name -> a context manager that puts the model in that configuration (and takes it out again)."""
    from s0.adapters import build_adapter

    @contextlib.contextmanager
    def lora(merged: bool) -> Iterator[None]:
        # A fresh peft wrapper each time, unloaded afterwards: base/S0/offset then run without peft's wrappers.
        adapter = build_adapter("lora", model, **LORA_FIELDS)
        fill_random(
            adapter.parameters(), 0.01, 0
        )  # B = 0 at init would still run the branch; make it nonzero
        try:
            if merged:
                adapter.merge()
            yield
        finally:
            adapter.remove()

    return {
        "base": contextlib.nullcontext,
        "s0": s0.active,
        "state_offset": offset.active,
        "lora_unmerged": lambda: lora(False),
        "lora_merged": lambda: lora(True),
    }


def step_time(dec: StaticGreedyDecoder, seqs: list[list[int]], steps: int, graph: bool, device) -> float:
    """Mean seconds per decode step over `steps` steps queued back to back, after a prefill and warmup."""
    dec.release_graph()
    ids, mask = left_pad(seqs, 0, device)
    dec.prefill(ids, mask)
    if graph:
        dec.capture(warmup=2)
    else:
        for _ in range(2):
            dec.step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        dec.step()
    sync(device)
    dt = (time.perf_counter() - t0) / steps
    dec.release_graph()
    return dt


def decode_table(model, s0, offset, args, device, out: dict[str, Any], save) -> dict[str, Any]:
    """Fill `out["batch_<b>"]` per batch size (and `save()` after each)."""
    contexts = config_contexts(model, s0, offset)
    modes = ["eager"] + (["graph"] if device.type == "cuda" else [])
    for batch in args.batch_sizes:
        seqs = random_ids([args.prompt_len] * batch, model.config.vocab_size, args.seed)
        dec = StaticGreedyDecoder(model, batch, args.prompt_len + args.steps + 8)
        samples: dict[tuple[str, str], list[float]] = {(c, m): [] for c in args.configs for m in modes}
        errors: dict[str, str] = {}
        for rnd in range(args.repeats):
            for cfg in args.configs:
                for mode in modes:
                    if f"{cfg}/{mode}" in errors:
                        continue
                    try:
                        with contexts[cfg](), torch.no_grad():
                            samples[(cfg, mode)].append(
                                step_time(dec, seqs, args.steps, mode == "graph", device)
                            )
                    except (
                        Exception
                    ) as err:  # one failing config/mode (e.g. a graph capture) must not end the run
                        errors[f"{cfg}/{mode}"] = f"{type(err).__name__}: {str(err)[:500]}"
                        log(f"FAILED b{batch} {cfg}/{mode}: {errors[f'{cfg}/{mode}'][:200]}")
            log(f"batch {batch} round {rnd + 1}/{args.repeats} done")
        rows = []
        for mode in modes:
            base = samples.get(("base", mode)) or []
            base_med = statistics.median(base) if base else None
            for cfg in args.configs:
                s = samples[(cfg, mode)]
                if not s:
                    rows.append(
                        {"config": cfg, "mode": mode, "error": errors.get(f"{cfg}/{mode}", "not run")}
                    )
                    continue
                st = summarize(s)
                # Ratio per round (same round = closest in time), then the median over rounds.
                ratios = [a / b for a, b in zip(s, base)] if len(base) == len(s) else []
                rows.append({
                    "config": cfg,
                    "mode": mode,
                    "ms_per_token": st["median"] * 1e3,
                    "spread": st["spread"],
                    "tokens_per_s": batch / st["median"],
                    "ratio_vs_base": statistics.median(ratios) if ratios else (st["median"] / base_med if base_med else None),
                    "ratio_min": min(ratios) if ratios else None,
                    "ratio_max": max(ratios) if ratios else None,
                    "samples_s": s,
                })  # fmt: skip
        out[f"batch_{batch}"] = {"rows": rows, "errors": errors}
        del dec
        save()
    return out


def swap_table(model, s0, args, device) -> dict[str, Any]:
    """Seconds to switch S0 state sets versus merging / unmerging LoRA."""
    from s0.adapters import S0Adapter, build_adapter

    out: dict[str, Any] = {}
    other = S0Adapter(model, alpha=0.07)
    fill_random(other.parameters(), 1.0, args.seed + 7)
    sets = [s0.state_dict(), other.state_dict()]
    flip = {"i": 0}

    def swap_mem() -> None:
        flip["i"] ^= 1
        s0.swap(sets[flip["i"]])

    out["s0_swap_in_memory"] = time_fn(swap_mem, device, warmup=2, repeats=args.swap_repeats)
    out["s0_state_mb"] = sum(t.numel() * t.element_size() for t in sets[0].values()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        path = other.save(Path(tmp) / "s0_other")
        out["s0_swap_from_disk"] = time_fn(
            lambda: s0.swap(path), device, warmup=1, repeats=max(3, args.swap_repeats // 2)
        )
    s0.swap(sets[0])

    lora = build_adapter("lora", model, **LORA_FIELDS)
    fill_random(lora.parameters(), 0.01, 0)
    try:
        merges, unmerges = [], []
        lora.merge()  # warmup
        lora.unmerge()
        for _ in range(args.swap_repeats):
            sync(device)
            t0 = time.perf_counter()
            lora.merge()
            sync(device)
            t1 = time.perf_counter()
            lora.unmerge()
            sync(device)
            merges.append(t1 - t0)
            unmerges.append(time.perf_counter() - t1)
        out["lora_merge"] = summarize(merges)
        out["lora_unmerge"] = summarize(unmerges)
        out["lora_swap_merged"] = {
            "median": out["lora_merge"]["median"] + out["lora_unmerge"]["median"],
            "note": "unmerge the old adapter + merge the new one (sum of the two medians)",
        }
        out["lora_trainable_mb"] = sum(p.numel() * p.element_size() for p in lora.parameters()) / 1e6
    finally:
        lora.remove()
    out["ratio_lora_swap_vs_s0_swap"] = out["lora_swap_merged"]["median"] / out["s0_swap_in_memory"]["median"]
    return out


def measure(args, device: torch.device, res: dict[str, Any], save) -> dict[str, Any]:
    """Fill `res` (decode table per batch size, then switching costs), calling `save()` as it goes."""
    from s0.adapters import S0Adapter, StateOffsetAdapter
    from s0.backends import select_backends

    res["backends"] = {k: v for k, v in select_backends(device=device).items() if k != "reasons"}
    model = build("qwen3_5_4b", args.tiny, device, seed=args.seed)
    s0 = S0Adapter(model, alpha=0.07)
    fill_random(s0.parameters(), 1.0, args.seed)
    offset = StateOffsetAdapter(model, alpha=0.07)
    fill_random(offset.parameters(), 1.0, args.seed + 1)
    res["decode"] = {}
    guarded(res, "decode", lambda: decode_table(model, s0, offset, args, device, res["decode"], save))
    save()
    guarded(res, "swap", lambda: swap_table(model, s0, args, device))
    return res


def summary(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for bkey, table in (res.get("decode") or {}).items():
        if not isinstance(table, dict) or "rows" not in table:
            continue
        for r in table["rows"]:
            if r.get("ratio_vs_base") is not None and r["config"] != "base":
                out[f"{bkey}/{r['mode']}/{r['config']}"] = r["ratio_vs_base"]
    s0_ratios = [v for k, v in out.items() if k.endswith("/s0")]
    out["s0_within_3pct"] = bool(s0_ratios) and all(abs(v - 1) <= 0.03 for v in s0_ratios)
    return out


def markdown(payload: dict[str, Any]) -> str:
    res = payload.get("run") or {}
    md = [f"# Decode overhead ({payload['meta'].get('gpu', {}).get('name', payload['meta']['device'])})", ""]
    if "error" in res:
        return "\n".join([*md, f"FAILED: {res['error'][:500]}"])
    cols = [
        "config",
        "mode",
        "ms_per_token",
        "spread",
        "tokens_per_s",
        "ratio_vs_base",
        "ratio_min",
        "ratio_max",
        "error",
    ]
    for bkey, table in (res.get("decode") or {}).items():
        if isinstance(table, dict) and "rows" in table:
            md += [f"## {bkey}", "", md_table(table["rows"], cols), ""]
    sw = res.get("swap") or {}
    if "error" not in sw and sw:
        rows = [
            {"operation": k, "median_ms": v["median"] * 1e3}
            for k, v in sw.items()
            if isinstance(v, dict) and "median" in v
        ]
        md += ["## Switching adapters", "", md_table(rows, ["operation", "median_ms"]), "",
               f"S0 state {sw.get('s0_state_mb', 0):.1f} MB; LoRA swap (unmerge+merge) / S0 swap = "
               f"{sw.get('ratio_lora_swap_vs_s0_swap', float('nan')):.3g}"]  # fmt: skip
    elif sw:
        md.append(f"Switching FAILED: {sw['error'][:300]}")
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 84])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16, help="decode steps per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--swap-repeats", type=int, default=10)
    args = ap.parse_args(argv)
    if args.tiny:
        args.batch_sizes = [min(b, 4) for b in args.batch_sizes]
        args.prompt_len = min(args.prompt_len, 12)
        args.steps = min(args.steps, 3)
        args.repeats = min(args.repeats, 2)
        args.swap_repeats = min(args.swap_repeats, 3)
    device = resolve_device(args)
    FAILURES.clear()
    payload: dict[str, Any] = {"meta": metadata(argv, device), "name": NAME, "settings": vars(args)}
    payload["run"] = res = {}

    def save(quiet: bool = True) -> None:
        if payload.get("run") and "error" not in payload["run"]:
            payload["summary"] = summary(payload["run"])
        write_results(args.out, NAME, payload, markdown(payload), quiet=quiet)

    with cpu_threads(1 if args.tiny else None):
        guarded(payload, "run", lambda: measure(args, device, res, save))
    save(quiet=False)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
