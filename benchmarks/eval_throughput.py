"""Evaluation throughput: greedy decoding of the 84 held-out HumanEval prompts on the Qwen3.5-4B architecture with S0
active, one prompt at a time (the reference practice) against batched engines, in one process.

    python -m benchmarks.eval_throughput                    # GPU defaults (about 2-3 minutes)
    python -m benchmarks.eval_throughput --profile          # + torch.profiler top-20 ops at batch 1 and 84
    python -m benchmarks.eval_throughput --new-tokens 512 --single-prompts 8 --single-tokens 128   # closer to full
    python -m benchmarks.eval_throughput --tiny             # CPU smoke run

Engines (random weights, so EOS is made unreachable and every row decodes the full length):
    hf_single     s0.generation.generate, batch_size=1, on `--single-prompts` prompts x `--single-tokens` tokens
    hf_batched    s0.generation.generate, batch_size=`--batch-size` (84: all prompts in one left-padded batch)
    static_eager  benchmarks.decode_loop.StaticGreedyDecoder: StaticCache, ready-made masks, no per-step host sync
    static_graph  the same with one decode step captured in a CUDA graph and replayed
    engine        s0.decode.decode, the harness's engine (eval.engine=auto on CUDA), greedy at batch B, timed by
                  its own phase timings (prefill, graph capture, per step)
    engine_sweep  s0.decode at each `--engine-batches` size (default 1, 16, 84; larger sizes probe the largest batch
                  that fits), greedy and sampled (T=0.7, top-p 0.95), per `--gdn-decode` kernel (native: what
                  transformers resolved, fla or PyTorch; inplace: s0.decode.gdn_decode_inplace), with the fraction of
                  the bandwidth bound at that batch
Each engine is timed twice, with 1 and with N new tokens, so prefill and per-step cost separate:
step = (T(N) - T(1)) / (N - 1). Totals for the full task (84 prompts x 512 tokens) are EXTRAPOLATED from these
(`est_full_s` = batches x (T(1) + 511 x step)); one-at-a-time is measured on a subset only, because at HF's per-step
cost it would take hours. The memory-bandwidth bound per step counts the bytes a decode step must move at least:
all weights once (tied embeddings once), the GatedDeltaNet states read and written (fp32, as cached), the conv
states, and the attention K/V cache read at the mean context length; divided by a measured device-to-device copy
bandwidth. Also timed: a bare decode step (model forward with a DynamicCache, one token, host sync per step, as HF
does) so that HF `generate`'s own loop overhead shows as the difference.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import (
    bandwidth_gbps,
    base_parser,
    build,
    cpu_threads,
    eval_prompt_lengths,
    exit_code,
    fill_random,
    free_memory,
    guarded,
    md_table,
    metadata,
    random_ids,
    resolve_device,
    scale_lengths,
    summarize,
    sync,
    write_results,
)
from benchmarks.decode_loop import IdTokenizer, StaticGreedyDecoder, left_pad
from s0.decode import FLA_TILES, decode

NAME = "eval_throughput"
FULL_PROMPTS, FULL_TOKENS = 84, 512


# ---------------------------------------------------------------- bandwidth bound
def decode_bytes(model: torch.nn.Module, batch: int, context: float) -> dict[str, float]:
    """Minimum bytes one decode step of a Qwen3.5 model moves at `batch` rows and mean `context` tokens."""
    from s0.adapters.kinds import recurrent_layers

    cfg = model.config
    seen, weights = set(), 0
    for p in model.parameters():  # tied embeddings are one tensor: count it once
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            weights += p.numel() * p.element_size()
    layers = recurrent_layers(model)
    state = sum(r.numel for r in layers) * 4  # fp32 recurrent state (what fla returns and the cache keeps)
    conv_dim = (
        2 * cfg.linear_num_key_heads * cfg.linear_key_head_dim
        + cfg.linear_num_value_heads * cfg.linear_value_head_dim
    )
    elt = next(model.parameters()).element_size()
    conv = len(layers) * conv_dim * cfg.linear_conv_kernel_dim * elt
    n_attn = sum(t == "full_attention" for t in cfg.layer_types)
    kv_per_token = n_attn * 2 * cfg.num_key_value_heads * cfg.head_dim * elt
    per_row = 2 * state + 2 * conv + kv_per_token * context
    return {
        "weights": float(weights),
        "recurrent_state_rw": 2.0 * state * batch,
        "conv_state_rw": 2.0 * conv * batch,
        "kv_read": float(kv_per_token * context * batch),
        "total": float(weights + per_row * batch),
    }


def bound(model, batch: int, context: float, bw_gbps: float | None) -> dict[str, Any]:
    b = decode_bytes(model, batch, context)
    out: dict[str, Any] = {"bytes": b, "batch": batch, "context": context, "bandwidth_gbps": bw_gbps}
    if bw_gbps:
        out["step_s"] = b["total"] / (bw_gbps * 1e9)
        out["tokens_per_s"] = batch / out["step_s"]
    return out


# ---------------------------------------------------------------- engines
def run_hf(model, tok: IdTokenizer, idx: list[int], batch_size: int, new_tokens: int, device) -> float:
    from s0.generation import GenerationSpec, generate

    texts = [f"p{i}" for i in idx]
    spec = GenerationSpec(max_new_tokens=new_tokens, batch_size=batch_size, max_length=100_000, engine="hf")
    sync(device)
    t0 = time.perf_counter()
    generate(model, tok, texts, spec, progress=False)
    sync(device)
    return time.perf_counter() - t0


def hf_tokens(model, tok: IdTokenizer, idx: list[int], batch_size: int, new_tokens: int) -> list[list[int]]:
    from s0.generation import GenerationSpec, generate

    spec = GenerationSpec(max_new_tokens=new_tokens, batch_size=batch_size, max_length=100_000, engine="hf")
    outs = generate(model, tok, [f"p{i}" for i in idx], spec, progress=False)
    return [[int(x) for x in o[0].split()] for o in outs]


def run_static(
    dec: StaticGreedyDecoder, seqs: list[list[int]], new_tokens: int, graph: bool, device
) -> tuple[float, Any]:
    ids, mask = left_pad(seqs, 0, device)
    sync(device)
    t0 = time.perf_counter()
    out = dec.generate(ids, mask, new_tokens, graph=graph)
    sync(device)
    return time.perf_counter() - t0, out


def engine_result(
    t1: float, tn: float, n: int, rows: int, batches: int, prompts_full: int, batch: int
) -> dict[str, Any]:
    step = (tn - t1) / (n - 1) if n > 1 else tn
    full_batches = -(-prompts_full // batch)
    est_full = full_batches * (t1 + (FULL_TOKENS - 1) * step)
    return {
        "t_1_token_s": t1,
        "t_n_tokens_s": tn,
        "new_tokens": n,
        "rows": rows,
        "step_s": step,
        "decode_tokens_per_s": batch / step if step > 0 else None,
        "measured_tokens_per_s": rows * n / tn,
        "est_full_s": est_full,
        "est_full_note": f"{full_batches} batch(es) x (T(1) + {FULL_TOKENS - 1} x step): extrapolated",
    }


def time_engine(model, ids, mask, n: int, vocab: int, temperature: float | None, gdn_decode: str, device,
                top_p: float = 0.95) -> dict[str, Any]:  # fmt: skip
    """One warm-up call of the same shape (compiles, primes the allocator), then one timed call of s0.decode with
    its phase timings (EOS out of vocab: full length). `gdn_decode` is a kernel name (or "auto", the engine's
    default), optionally with "+compile" or "+eager" to force the compiled or the eager step (default: the
    engine's choice, compiled on CUDA)."""
    kernel, _, mode = gdn_decode.partition("+")
    compile_step = {"compile": True, "eager": False, "": None}[mode]
    run = dict(temperature=temperature, top_p=top_p, gdn_decode=kernel, cuda_graph=device.type == "cuda",
               compile_step=compile_step)  # fmt: skip
    warm: dict[str, Any] = {}
    decode(model, ids, mask, n, [vocab], 0, timings=warm, **run)
    free_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t: dict[str, Any] = {}
    out = decode(model, ids, mask, n, [vocab], 0, timings=t, **run)
    rows = ids.shape[0]
    return {
        "rows": rows,
        "new_tokens": n,
        "t_1_token_s": t["prefill_s"],
        "capture_s": t["capture_s"],
        "first_call_capture_s": warm["capture_s"],  # with torch.compile's tracing and code generation
        "gdn_decode": t["gdn_decode"],
        "compiled": t["compiled"],
        "fla_tiles": {"x".join(map(str, k)): list(v) for k, v in FLA_TILES.items()},
        "step_s": t["step_s"],
        "decode_tokens_per_s": rows / t["step_s"] if t["step_s"] > 0 else None,
        "measured_tokens_per_s": rows * n / (t["prefill_s"] + t["capture_s"] + t["decode_s"]),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "tokens": out.tokens,
    }


def engine_sweep(
    model, seqs, vocab: int, args, device, bw, mean_len: float, save, out: dict[str, Any]
) -> None:
    """s0.decode per-step time and fraction of the bandwidth bound at each `--engine-batches` size, greedy and
    sampled (temperature 0.7, top-p 0.95), for each `--gdn-decode` kernel. Rows beyond the prompts reuse them.
    Batches above `--batch-size` probe the largest that fits: out of memory there is a finding, not a failure.
    Results go into `out` as they finish."""
    for b in _ints(args.engine_batches):
        sub = [seqs[i % len(seqs)] for i in range(b)]
        ids, mask = left_pad(sub, 0, device)
        context = statistics.mean(map(len, sub)) + args.new_tokens / 2
        bnd = bound(model, b, context, bw)
        for mode, temp in (("greedy", None), ("sampled", 0.7)):
            for kernel in args.gdn_decode.split(","):
                key = f"{mode}_{kernel}_b{b}"

                def one(temp=temp, kernel=kernel, ids=ids, mask=mask, bnd=bnd, b=b) -> dict[str, Any]:
                    try:
                        r = time_engine(model, ids, mask, args.new_tokens, vocab, temp, kernel, device)
                    except torch.OutOfMemoryError as err:
                        if b <= args.batch_size:
                            raise
                        return {"rows": b, "out_of_memory": str(err)[:200]}
                    finally:
                        free_memory()
                    r.pop("tokens")
                    if bnd.get("step_s"):
                        r["bound_step_s"] = bnd["step_s"]
                        r["bound_fraction"] = bnd["step_s"] / r["step_s"]
                    return r

                out[key] = guarded(out, key, one)
                save()


def _ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def bare_dynamic_step(model, seqs: list[list[int]], steps: int, device) -> dict[str, Any]:
    """Model forward with a DynamicCache, one token per step, host sync after each (what HF's loop waits on)."""
    from transformers import DynamicCache

    ids, mask = left_pad(seqs, 0, device)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                    logits_to_keep=1)  # fmt: skip
        tok = out.logits[:, -1:].argmax(-1)
        last = pos[:, -1:]
        times = []
        for _ in range(steps + 2):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last = last + 1
            sync(device)
            t0 = time.perf_counter()
            out = model(
                input_ids=tok, attention_mask=mask, position_ids=last, past_key_values=cache, use_cache=True
            )
            tok = out.logits[:, -1:].argmax(-1)
            sync(device)
            times.append(time.perf_counter() - t0)
    return summarize(times[2:])  # the first two steps warm up


def static_steps(
    dec: StaticGreedyDecoder, seqs: list[list[int]], steps: int, graph: bool, device
) -> dict[str, Any]:
    """Per-step time of the static decoder, `steps` steps queued back to back (no sync in between)."""
    ids, mask = left_pad(seqs, 0, device)
    dec.prefill(ids, mask)
    if graph and dec.graph is None:
        dec.capture(warmup=2)
    with torch.no_grad():
        for _ in range(2):
            dec.step()
        reps = []
        for _ in range(3):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                dec.step()
            sync(device)
            reps.append((time.perf_counter() - t0) / steps)
    return summarize(reps)


# ---------------------------------------------------------------- profiling
def _attr(e: Any, *names: str) -> float:
    for n in names:
        v = getattr(e, n, None)
        if v is not None:
            return float(v)
    return 0.0


def _activities(device: torch.device) -> list:
    from torch.profiler import ProfilerActivity

    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])


def _profile_summary(
    prof, steps: int, wall_s_per_step: float, device: torch.device, top: int = 20
) -> dict[str, Any]:
    """Top ops by self device time and by self CPU time, kernels per step, device busy time per step."""
    ev = prof.key_averages()
    rows = []
    for e in ev:
        rows.append({
            "name": e.key[:90],
            "count": int(e.count),
            "self_device_ms": _attr(e, "self_device_time_total", "self_cuda_time_total") / 1e3,
            "self_cpu_ms": _attr(e, "self_cpu_time_total") / 1e3,
        })  # fmt: skip
    kernels = [e for e in prof.events() if "CUDA" in str(getattr(e, "device_type", ""))]
    sort_key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return {
        "steps": steps,
        "wall_ms_per_step": wall_s_per_step * 1e3,
        # Sum of kernel self times: the GPU's busy time; wall minus this is launch/host overhead (GPU idle).
        "device_busy_ms_per_step": sum(r["self_device_ms"] for r in rows) / steps,
        "kernels_per_step": len(kernels) / steps,
        "aten_ops_per_step": sum(r["count"] for r in rows if r["name"].startswith("aten::")) / steps,
        "top_by_self_device": sorted(rows, key=lambda r: -r["self_device_ms"])[:top],
        "top_by_self_cpu": sorted(rows, key=lambda r: -r["self_cpu_ms"])[:top],
        "table": ev.table(sort_by=sort_key, row_limit=top, max_name_column_width=60),
        "table_cpu": ev.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=60),
    }


def profile_hf_generate(model, seqs: list[list[int]], steps: int, device: torch.device) -> dict[str, Any]:
    """torch.profiler over `steps` decode steps inside HF `model.generate` (prefill and one warmup step excluded):
    a logits processor, called once per generated token, advances the profiler schedule."""
    from torch.profiler import profile, schedule
    from transformers import LogitsProcessor, LogitsProcessorList

    ids, mask = left_pad(seqs, 0, device)
    stamps: list[float] = []
    holder: dict[str, Any] = {}

    class StepMarker(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            stamps.append(time.perf_counter())
            holder["prof"].step()
            return scores

    wait, warm = 1, 1  # profiler step 0 = prefill, step 1 = first decode step (warmup), then `steps` active
    with torch.no_grad(), profile(activities=_activities(device), schedule=schedule(wait=wait, warmup=warm, active=steps, repeat=1)) as prof:  # fmt: skip
        holder["prof"] = prof
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=wait + warm + steps + 1, do_sample=False,
                       pad_token_id=0, logits_processor=LogitsProcessorList([StepMarker()]))  # fmt: skip
        sync(device)
    window = stamps[wait + warm - 1 : wait + warm + steps]
    wall = (
        statistics.median([b - a for a, b in itertools.pairwise(window)]) if len(window) > 1 else float("nan")
    )
    return _profile_summary(prof, steps, wall, device)


def profile_static_steps(model, seqs: list[list[int]], steps: int, device: torch.device) -> dict[str, Any]:
    """torch.profiler over `steps` eager steps of the static decoder (prefill and one warmup step excluded)."""
    from torch.profiler import profile

    dec = StaticGreedyDecoder(model, len(seqs), max(map(len, seqs)) + steps + 8)
    ids, mask = left_pad(seqs, 0, device)
    dec.prefill(ids, mask)
    dec.step()
    sync(device)
    with torch.no_grad(), profile(activities=_activities(device)) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            dec.step()
        sync(device)
        wall = (time.perf_counter() - t0) / steps
    return _profile_summary(prof, steps, wall, device)


# ---------------------------------------------------------------- main
def measure(args, device: torch.device, res: dict[str, Any], save) -> dict[str, Any]:
    """Fill `res` stage by stage, calling `save()` after each (partial results survive a time limit)."""
    from s0.adapters import S0Adapter
    from s0.backends import select_backends

    res["backends"] = {k: v for k, v in select_backends(device=device).items() if k != "reasons"}
    model = build("qwen3_5_4b", args.tiny, device, seed=args.seed)
    # Random weights emit any id, the real EOS included: decode the full length (IdTokenizer's EOS is out of vocab).
    model.generation_config.eos_token_id = None
    vocab = model.config.vocab_size
    lengths = eval_prompt_lengths(args.prompts)
    if args.tiny:
        lengths = scale_lengths(lengths, 0.05)
    seqs = random_ids(lengths, vocab, args.seed)
    tok = IdTokenizer(seqs, vocab)
    res["prompt_lengths"] = {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths),
                             "n": len(lengths)}  # fmt: skip
    adapter = S0Adapter(model, alpha=0.07)
    fill_random(adapter.parameters(), 1.0, args.seed)
    adapter.activate()  # evaluation runs with S0 active (zero decode overhead is what overhead.py checks)
    res["bandwidth_gbps"] = bandwidth_gbps(device)
    mean_len = statistics.mean(lengths)
    res["bound"] = {
        "batch_1": bound(model, 1, mean_len + args.new_tokens / 2, res["bandwidth_gbps"]),
        f"batch_{args.batch_size}": bound(
            model, args.batch_size, mean_len + args.new_tokens / 2, res["bandwidth_gbps"]
        ),
    }
    engines: dict[str, Any] = {}
    res["engines"] = engines
    save()
    all_idx = list(range(len(seqs)))
    single_idx = all_idx[: args.single_prompts]

    def hf_single() -> dict[str, Any]:
        run_hf(model, tok, single_idx[:1], 1, 2, device)  # warmup: Triton compile/autotune at batch 1
        t1 = sum(run_hf(model, tok, [i], 1, 1, device) for i in single_idx)
        tn = sum(run_hf(model, tok, [i], 1, args.single_tokens, device) for i in single_idx)
        r = engine_result(
            t1 / len(single_idx), tn / len(single_idx), args.single_tokens, 1, 1, FULL_PROMPTS, 1
        )
        r["prompts_measured"] = len(single_idx)
        return r

    def hf_batched() -> dict[str, Any]:
        run_hf(model, tok, all_idx, args.batch_size, 2, device)  # warmup at the timed shapes
        t1 = run_hf(model, tok, all_idx, args.batch_size, 1, device)
        tn = run_hf(model, tok, all_idx, args.batch_size, args.new_tokens, device)
        return engine_result(t1, tn, args.new_tokens, len(all_idx), 1, FULL_PROMPTS, args.batch_size)

    stages = set(args.stages.split(","))
    if "hf_single" in stages:
        engines["hf_single"] = guarded(engines, "hf_single", hf_single)
        save()
    if "hf_batched" in stages:
        engines["hf_batched"] = guarded(engines, "hf_batched", hf_batched)
        save()

    width = max(lengths)
    batch_seqs = seqs[: args.batch_size]
    dec_holder: dict[str, Any] = {}

    def static(graph: bool) -> dict[str, Any]:
        dec = dec_holder.get("dec") or StaticGreedyDecoder(model, len(batch_seqs), width + args.new_tokens)
        dec_holder["dec"] = dec
        run_static(dec, batch_seqs, 4 if graph else 2, graph, device)  # warmup (and graph capture)
        t1, _ = run_static(dec, batch_seqs, 1, graph, device)
        tn, out = run_static(dec, batch_seqs, args.new_tokens, graph, device)
        r = engine_result(t1, tn, args.new_tokens, len(batch_seqs), 1, FULL_PROMPTS, len(batch_seqs))
        # Same greedy tokens as HF generate? (bf16: kernels differ, so late tokens may diverge on near-ties.)
        k = min(args.agree_tokens, args.new_tokens)
        if "hf_ref" not in dec_holder:  # computed once, shared by the eager and graph engines
            dec_holder["hf_ref"] = hf_tokens(model, tok, list(range(len(batch_seqs))), args.batch_size, k)
        ref = dec_holder["hf_ref"]
        mine = out[:, :k].tolist()
        r["agree_first_k_tokens"] = k
        r["rows_identical_to_hf"] = sum(a == b for a, b in zip(mine, ref)) / len(ref)
        return r

    def engine() -> dict[str, Any]:
        # s0.decode, the harness's engine (eval.engine=auto on CUDA), greedy at batch B: its own phase timings
        ids, mask = left_pad(batch_seqs, 0, device)
        r = time_engine(model, ids, mask, args.new_tokens, vocab, None, "auto", device)  # the default kernels
        k = min(args.agree_tokens, args.new_tokens)
        if "hf_ref" not in dec_holder:
            dec_holder["hf_ref"] = hf_tokens(model, tok, list(range(len(batch_seqs))), args.batch_size, k)
        ref = dec_holder["hf_ref"]
        r["agree_first_k_tokens"] = k
        r["rows_identical_to_hf"] = sum(a == b for a, b in zip(r.pop("tokens")[:, :k].tolist(), ref)) / len(
            ref
        )
        r["est_full_s"] = -(-FULL_PROMPTS // len(batch_seqs)) * (
            r["t_1_token_s"] + (FULL_TOKENS - 1) * r["step_s"]
        )
        return r

    if "static" in stages:
        engines["static_eager"] = guarded(engines, "static_eager", lambda: static(False))
        save()
        if device.type == "cuda":
            engines["static_graph"] = guarded(engines, "static_graph", lambda: static(True))
            save()
    if "engine" in stages:
        engines["engine"] = guarded(engines, "engine", engine)
    dec_holder.clear()  # release the batch-84 static cache and graph pool before the next stage
    free_memory()
    save()
    if "sweep" in stages:
        res["engine_sweep"] = {}  # filled config by config: a timed-out call keeps what finished
        engine_sweep(
            model, seqs, vocab, args, device, res["bandwidth_gbps"], mean_len, save, res["engine_sweep"]
        )
        save()

    # Bare decode steps at batch 1 and B: where does HF generate's per-step time go?
    bare: dict[str, Any] = {}
    res["bare_step"] = bare
    for b in sorted({1, args.batch_size}) if "bare" in stages else []:
        sub = seqs[:b]
        bare[f"dynamic_sync_b{b}"] = guarded(
            bare, f"dynamic_sync_b{b}", lambda sub=sub: bare_dynamic_step(model, sub, args.bare_steps, device)
        )

        def st(graph: bool, sub=sub) -> dict[str, Any]:
            dec = StaticGreedyDecoder(model, len(sub), max(map(len, sub)) + args.bare_steps * 4 + 8)
            return static_steps(dec, sub, args.bare_steps, graph, device)

        bare[f"static_eager_b{b}"] = guarded(bare, f"static_eager_b{b}", lambda st=st: st(False))
        if device.type == "cuda":
            bare[f"static_graph_b{b}"] = guarded(bare, f"static_graph_b{b}", lambda st=st: st(True))
    save()

    if args.profile:
        prof: dict[str, Any] = {}
        res["profile"] = prof
        n = args.profile_steps
        for b in sorted({1, args.batch_size}):
            sub = seqs[:b]
            prof[f"hf_generate_b{b}"] = guarded(
                prof, f"hf_generate_b{b}", lambda sub=sub: profile_hf_generate(model, sub, n, device)
            )
            prof[f"static_eager_step_b{b}"] = guarded(
                prof, f"static_eager_step_b{b}", lambda sub=sub: profile_static_steps(model, sub, n, device)
            )
            save()
    adapter.deactivate()
    return res


def summarize_run(res: dict[str, Any], args) -> dict[str, Any]:
    """Speedups of each batched engine over one-at-a-time (extrapolated full task) and fractions of the bound."""
    eng = {k: v for k, v in (res.get("engines") or {}).items() if v and "error" not in v}
    single = eng.get("hf_single") or {}
    bounds = res.get("bound", {})
    out: dict[str, Any] = {}
    speedups, fractions = [], []
    for name, e in eng.items():
        bnd = bounds.get("batch_1" if name == "hf_single" else f"batch_{args.batch_size}", {})
        if bnd.get("tokens_per_s") and e.get("decode_tokens_per_s"):
            out[f"bound_fraction_{name}"] = e["decode_tokens_per_s"] / bnd["tokens_per_s"]
            if name != "hf_single":
                fractions.append(out[f"bound_fraction_{name}"])
        if name != "hf_single" and single.get("est_full_s") and e.get("est_full_s"):
            out[f"speedup_{name}_vs_single"] = single["est_full_s"] / e["est_full_s"]
            speedups.append(out[f"speedup_{name}_vs_single"])
    out["meets_20x"] = bool(speedups) and max(speedups) >= 20
    out["meets_25pct_bound"] = bool(fractions) and max(fractions) >= 0.25
    return out


def markdown(payload: dict[str, Any], args) -> str:
    res = payload.get("run") or {}
    md = [
        f"# Evaluation throughput ({payload['meta'].get('gpu', {}).get('name', payload['meta']['device'])})",
        "",
    ]
    if "error" in res:
        return "\n".join([*md, f"FAILED: {res['error'][:500]}"])
    bb = res.get("bound", {})
    bw = res.get("bandwidth_gbps")
    md.append(f"Measured copy bandwidth: {f'{bw:.0f} GB/s' if bw else 'n/a (no GPU)'}. Bound per decode step: " + ", ".join(
        f"{k}: {v.get('step_s', 0) * 1e3:.2f} ms ({v.get('tokens_per_s', 0):.0f} tok/s)" for k, v in bb.items()))  # fmt: skip
    md.append(f"Full task = {FULL_PROMPTS} prompts x {FULL_TOKENS} tokens; est_full_s is extrapolated from measured "
              f"T(1) and per-step time (hf_single measured on {args.single_prompts} prompts x {args.single_tokens} tokens).")  # fmt: skip
    rows = []
    for name, e in (res.get("engines") or {}).items():
        if not e or "error" in e:
            rows.append({"engine": name, "error": (e or {}).get("error", "failed")[:200]})
            continue
        rows.append({"engine": name, "rows": e["rows"], "new_tokens": e["new_tokens"], "prefill_s": e["t_1_token_s"],
                     "step_ms": e["step_s"] * 1e3, "decode_tok_s": e["decode_tokens_per_s"],
                     "est_full_s": e["est_full_s"], "rows_identical_to_hf": e.get("rows_identical_to_hf")})  # fmt: skip
    md += ["", md_table(rows, ["engine", "rows", "new_tokens", "prefill_s", "step_ms", "decode_tok_s", "est_full_s",
                               "rows_identical_to_hf", "error"])]  # fmt: skip
    md += ["", "Summary: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in (payload.get("summary") or {}).items())]  # fmt: skip
    sweep = [{"config": k, **{c: v.get(c) for c in ("rows", "step_s", "bound_fraction", "compiled", "capture_s", "first_call_capture_s", "peak_gib")},
              "note": v.get("out_of_memory") or v.get("error", "")[:120]}
             for k, v in (res.get("engine_sweep") or {}).items() if v]  # fmt: skip
    for row in sweep:
        row["step_ms"] = row.pop("step_s") * 1e3 if row.get("step_s") else None
    md += ["", "s0.decode sweep (per-step time from the engine's own timings; bound_fraction = bound / step):", "",
           md_table(sweep, ["config", "rows", "step_ms", "bound_fraction", "compiled", "capture_s", "first_call_capture_s", "peak_gib", "note"])]  # fmt: skip
    bare_rows = [{"variant": k, "median_ms": v["median"] * 1e3, "spread": v["spread"]}
                 for k, v in (res.get("bare_step") or {}).items() if v and "median" in v]  # fmt: skip
    md += ["", "Bare decode step:", "", md_table(bare_rows, ["variant", "median_ms", "spread"])]
    for key, p in (res.get("profile") or {}).items():
        if not p or "error" in p:
            continue
        md += ["", f"## Profile {key}: wall {p['wall_ms_per_step']:.1f} ms/step, device busy "
               f"{p['device_busy_ms_per_step']:.1f} ms/step, {p['kernels_per_step']:.0f} kernels/step", "",
               "```", p["table"], "```"]  # fmt: skip
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=FULL_PROMPTS, help="held-out prompts (80-163), first n")
    ap.add_argument("--batch-size", type=int, default=FULL_PROMPTS)
    ap.add_argument("--new-tokens", type=int, default=128, help="batched engines; the full task is 512")
    ap.add_argument("--single-prompts", type=int, default=4, help="one-at-a-time subset")
    ap.add_argument("--single-tokens", type=int, default=32)
    ap.add_argument("--bare-steps", type=int, default=16)
    ap.add_argument("--agree-tokens", type=int, default=16, help="compare this many tokens with HF generate")
    ap.add_argument(
        "--profile", action="store_true", help="torch.profiler over a few decode steps at batch 1 and B"
    )
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument(
        "--engine-batches", default="1,16,84", help="s0.decode sweep: batch sizes (comma-separated)"
    )
    ap.add_argument(
        "--gdn-decode",
        default="auto,native",
        help="s0.decode sweep: GatedDeltaNet decode kernels, each optionally +compile or +eager",
    )
    ap.add_argument(
        "--stages",
        default="hf_single,hf_batched,static,engine,sweep,bare",
        help="which measurements to run (comma-separated; the default runs all)",
    )
    args = ap.parse_args(argv)
    if args.tiny:
        args.prompts = min(args.prompts, 6)
        args.batch_size = min(args.batch_size, args.prompts)
        args.new_tokens = min(args.new_tokens, 8)
        args.single_prompts = min(args.single_prompts, 2)
        args.single_tokens = min(args.single_tokens, 4)
        args.bare_steps = min(args.bare_steps, 3)
        args.agree_tokens = min(args.agree_tokens, 8)
        args.profile_steps = min(args.profile_steps, 2)
        args.engine_batches = "1,3"
    args.batch_size = min(args.batch_size, args.prompts)
    device = resolve_device(args)
    payload: dict[str, Any] = {"meta": metadata(argv, device), "name": NAME, "settings": vars(args)}
    res: dict[str, Any] = {}
    payload["run"] = res

    def save(quiet: bool = True) -> None:
        if payload.get("run") and "error" not in payload["run"]:
            payload["summary"] = summarize_run(payload["run"], args)
        write_results(args.out, NAME, payload, markdown(payload, args), quiet=quiet)

    with cpu_threads(1 if args.tiny else None):
        guarded(payload, "run", lambda: measure(args, device, res, save))
    save(quiet=False)
    return exit_code()


if __name__ == "__main__":
    sys.exit(main())
