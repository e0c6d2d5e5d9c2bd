"""Kernel parity: S0 forward logits and S0 state gradients through every available recurrence backend agree with
a higher-precision reference, on the real-size architectures (random weights), with and without padding.

    python -m benchmarks.kernel_parity                      # GPU: Qwen3.5-4B (fla, torch) + FalconH1-7B (torch)
    python -m benchmarks.kernel_parity --tiny               # CPU smoke run, seconds

For each model: an S0 adapter with random states (scaled so the state visibly moves the logits), a batch of
HumanEval-length sequences run (a) one at a time ("unpadded") and (b) as one left-padded batch ("padded").
Loss = mean cross-entropy of the last `--loss-tokens` positions against fixed random targets. Each backend's
logits and S0 gradients are compared with the reference (the same model upcast: bf16 -> fp32, fp32 -> fp64, through
the PyTorch kernels) by ||x - ref|| / ||ref||. Backends: GatedDeltaNet "fla" (route native) and "torch" (transformers'
PyTorch functions), plus "auto" = what `s0.backends.select_backends` picked; on Hopper with triton < 3.7.1 fla's
backward refuses, which is recorded, and "auto" must route gradients to torch and work. Mamba-2: "torch" always,
"mamba_ssm" when it imports. Also: a few cached decode steps (fla fused_recurrent vs torch recurrent), and
padded-vs-unpadded agreement per backend (the S0 pad fix on the real architecture).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `benchmarks` and `s0` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from benchmarks.common import (
    FAILURES,
    base_parser,
    build,
    cpu_threads,
    eval_prompt_lengths,
    exit_code,
    fill_random,
    guarded,
    layer_checkpointing,
    log,
    md_table,
    metadata,
    random_ids,
    resolve_device,
    scale_lengths,
    write_results,
)
from benchmarks.decode_loop import left_pad

NAME = "kernel_parity"
ALPHA = {"qwen3_5_4b": 0.07, "falcon_h1_7b": 0.65}  # paper App A: GDN / Mamba-2
# Std of the random states before alpha. A Mamba-2 state moves FalconH1's logits ~100x less than a GDN state moves
# Qwen3.5's (tiny models: 6e-5 vs 1e-1 relative at std 1; linear in the std), so Falcon gets a larger one.
STATE_SCALE = {"qwen3_5_4b": 1.0, "falcon_h1_7b": 100.0}
FAMILY_KEY = {"qwen3_5_4b": "gdn", "falcon_h1_7b": "mamba"}
BF16_TOL = 3e-2  # 32-44 bf16 layers accumulate rounding; single bf16 ops land at 1e-3..1e-2 (METHOD.md)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30))


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


def run_case(
    model, adapter, seqs: list[list[int]], targets: torch.Tensor, k: int, padded: bool, grad: bool, device
) -> dict[str, torch.Tensor]:
    """Last-k logits (B, k, V) and, if `grad`, the concatenated S0 gradient of the mean CE (both on the CPU).

    Inference semantics throughout (the injected state is alpha * S), so forward-only and gradient runs inject the
    same tensor. Gradient runs checkpoint each decoder layer (exact: tests/test_benchmarks.py), so the fp32
    reference of a 7B model fits beside its activations."""
    for p in adapter.parameters():
        p.grad = None
    logits_rows = []
    ctx = layer_checkpointing(model) if grad else torch.no_grad()
    with ctx, adapter.active():
        groups = [list(range(len(seqs)))] if padded else [[i] for i in range(len(seqs))]
        for rows in groups:
            ids, mask = left_pad([seqs[i] for i in rows], 0, device)
            # No cache, as in s0.train: a loss forward reads none, and one built here would only take memory.
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=_positions(mask),
                logits_to_keep=k,
                use_cache=False,
            )
            logits = out.logits.float()  # (b, k, V)
            if grad:
                ce = F.cross_entropy(logits.flatten(0, 1), targets[rows].flatten(), reduction="none")
                (ce.view(len(rows), k).mean(1).sum() / len(seqs)).backward()
            logits_rows.append(logits.detach().cpu())
    out = {"logits": torch.cat(logits_rows)}
    if grad:
        out["grad"] = torch.cat([p.grad.flatten().double().cpu() for p in adapter.parameters()])
        for p in adapter.parameters():
            p.grad = None
    return out


def decode_logits(model, adapter, seqs: list[list[int]], cont: torch.Tensor, device) -> torch.Tensor:
    """Logits (B, steps, V) of a teacher-forced continuation fed one token at a time after a padded prefill."""
    from transformers import DynamicCache

    ids, mask = left_pad(seqs, 0, device)
    cache = DynamicCache(config=model.config)
    steps = []
    with torch.no_grad(), adapter.active():
        pos = _positions(mask)
        model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True)
        last = pos[:, -1:]
        for t in range(cont.shape[1]):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last = last + 1
            out = model(
                input_ids=cont[:, t : t + 1],
                attention_mask=mask,
                position_ids=last,
                past_key_values=cache,
                use_cache=True,
            )
            steps.append(out.logits[:, -1].float().cpu())
    return torch.stack(steps, 1)


def parity_for(name: str, args, device: torch.device, choice: dict[str, Any]) -> dict[str, Any]:
    from s0.adapters import S0Adapter
    from s0.adapters import injection as inj

    family_key = FAMILY_KEY[name]
    model = build(name, args.tiny, device, seed=args.seed)
    dtype = next(model.parameters()).dtype
    ref_dtype = torch.float32 if dtype == torch.bfloat16 else torch.float64
    vocab = model.config.vocab_size
    lengths = eval_prompt_lengths(args.batch)
    if args.tiny:
        lengths = scale_lengths(lengths, 0.1, minimum=args.loss_tokens + 2)
    seqs = random_ids(lengths, vocab, args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    targets = torch.randint(1, vocab, (len(seqs), args.loss_tokens), generator=g).to(device)
    cont = torch.randint(1, vocab, (len(seqs), args.decode_steps), generator=g).to(device)

    adapter = S0Adapter(model, alpha=ALPHA[name])
    scale = args.state_scale if args.state_scale is not None else STATE_SCALE[name]
    fill_random(adapter.parameters(), scale, args.seed)

    # Backends to compare. "native" is whatever transformers resolved at import (fla / mamba-ssm / PyTorch).
    fast = choice["gdn"] if family_key == "gdn" else choice["mamba"]
    forward_routes = {"torch": "torch"}
    backward_routes = {"torch": "torch", "auto": choice["routes"][family_key]}
    if fast != "torch":
        forward_routes[fast] = "native"
        backward_routes[fast] = "native"
    result: dict[str, Any] = {
        "lengths": lengths,
        "alpha": ALPHA[name],
        "state_scale": scale,
        "dtype": str(dtype),
        "reference": f"{ref_dtype} (upcast copy of the same weights), PyTorch kernels",
        "routes": {
            "forward": forward_routes,
            "backward": backward_routes,
            "auto": choice["routes"][family_key],
        },
        "unavailable": [] if fast != "torch" else ["fla" if family_key == "gdn" else "mamba_ssm"],
    }
    errors: dict[str, Any] = {}

    def attempt(key: str, fn):
        scratch: dict[str, Any] = {}
        value = guarded(scratch, key, fn)
        if value is None:
            errors[key] = scratch[key]
        return value

    runs: dict[str, dict[str, Any]] = {}
    ref: dict[bool, Any] = {}
    decode: dict[str, torch.Tensor] = {}
    ref_decode = None
    saved_route = inj.get_routes()[family_key]
    try:
        for bname, route in backward_routes.items():
            for padded in (False, True):
                key = f"{bname}/{'padded' if padded else 'unpadded'}"
                inj.set_route(family_key, route)
                r = attempt(
                    key,
                    lambda p=padded: run_case(
                        model, adapter, seqs, targets, args.loss_tokens, p, True, device
                    ),
                )
                if r is not None:
                    runs[key] = r
        for bname, route in forward_routes.items():  # forward only where the backward refused (fla on Hopper)
            for padded in (False, True):
                key = f"{bname}/{'padded' if padded else 'unpadded'}"
                if key in runs:
                    continue
                inj.set_route(family_key, route)
                r = attempt(
                    f"{key}/forward",
                    lambda p=padded: run_case(
                        model, adapter, seqs, targets, args.loss_tokens, p, False, device
                    ),
                )
                if r is not None:
                    runs[key] = r
        # S0 must matter, or every comparison below is vacuous.
        inj.set_route(family_key, "torch")
        with torch.no_grad():
            ids, mask = left_pad(seqs, 0, device)
            base = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=_positions(mask),
                logits_to_keep=args.loss_tokens,
            )
            base_logits = base.logits.float().cpu()
            del base
        if "torch/padded" in runs:
            result["s0_effect_rel"] = rel(runs["torch/padded"]["logits"], base_logits)

        for bname, route in forward_routes.items():
            inj.set_route(family_key, route)
            d = attempt(f"decode:{bname}", lambda: decode_logits(model, adapter, seqs, cont, device))
            if d is not None:
                decode[bname] = d

        # Reference: the same weights upcast, PyTorch kernels.
        log(f"reference pass in {ref_dtype}")
        model.to(ref_dtype)
        inj.set_route(family_key, "torch")
        for padded in (False, True):
            ref[padded] = attempt(
                f"reference/{'padded' if padded else 'unpadded'}",
                lambda p=padded: run_case(model, adapter, seqs, targets, args.loss_tokens, p, True, device),
            )
        ref_decode = attempt("reference/decode", lambda: decode_logits(model, adapter, seqs, cont, device))
    finally:
        model.to(dtype)
        inj.set_route(family_key, saved_route)

    tol = BF16_TOL if dtype == torch.bfloat16 else 1e-4
    rows = []
    for bname in backward_routes.keys() | forward_routes.keys():
        for pad in ("unpadded", "padded"):
            key = f"{bname}/{pad}"
            row: dict[str, Any] = {"backend": bname, "padding": pad}
            err = errors.get(key)
            if err:
                row["backward_error"] = err["error"][:300]
            r = runs.get(key)
            if r is None:
                row["error"] = (errors.get(f"{key}/forward") or err or {}).get("error", "not run")[:300]
                row["within_tol"] = False
                rows.append(row)
                continue
            reference = ref.get(pad == "padded")
            if reference:
                row["logits_rel_err"] = rel(r["logits"], reference["logits"])
                if "grad" in r:
                    row["grad_rel_err"] = rel(r["grad"], reference["grad"])
            other = runs.get(f"{bname}/unpadded")
            if pad == "padded" and other:
                row["padded_vs_unpadded_rel"] = rel(r["logits"], other["logits"])
            errs = [row.get(k) for k in ("logits_rel_err", "grad_rel_err") if row.get(k) is not None]
            row["within_tol"] = bool(errs) and all(e <= tol for e in errs)
            rows.append(row)
    rows.sort(key=lambda r: (r["backend"], r["padding"]))
    result["rows"] = rows
    result["tolerance"] = tol
    result["errors"] = errors
    if ref_decode is not None:
        result["decode"] = [
            {"backend": b, "decode_logits_rel_err": rel(d, ref_decode), "steps": args.decode_steps}
            for b, d in decode.items()
        ]
    if len(decode) > 1:
        a, b = list(decode)[:2]
        result["decode_between_backends_rel"] = rel(decode[a], decode[b])
    fwd = [n for n in forward_routes if f"{n}/padded" in runs]
    if len(fwd) > 1:
        result["forward_between_backends_rel"] = rel(
            runs[f"{fwd[0]}/padded"]["logits"], runs[f"{fwd[1]}/padded"]["logits"]
        )
    auto_ok = [r for r in rows if r["backend"] == "auto" and "grad_rel_err" in r]
    result["auto_backend_works"] = len(auto_ok) == 2 and all(r["within_tol"] for r in auto_ok)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = base_parser(__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["qwen3_5_4b", "falcon_h1_7b"], choices=list(ALPHA))
    ap.add_argument("--batch", type=int, default=4, help="sequences (HumanEval eval-prompt lengths)")
    ap.add_argument("--loss-tokens", type=int, default=32, help="last positions that enter the loss")
    ap.add_argument("--decode-steps", type=int, default=8)
    ap.add_argument("--state-scale", type=float, default=None, help="std of the random S0 states (before alpha); "
                    "default per model: " + ", ".join(f"{k} {v:g}" for k, v in STATE_SCALE.items()))  # fmt: skip
    args = ap.parse_args(argv)
    device = resolve_device(args)
    from s0.backends import select_backends

    FAILURES.clear()
    payload: dict[str, Any] = {"meta": metadata(argv, device), "name": NAME}
    choice = select_backends(device=device)
    payload["backend_choice"] = {k: v for k, v in choice.items()}
    log("backend choice:", choice)
    with cpu_threads(1 if args.tiny else None):
        for name in args.models:
            guarded(payload, name, lambda name=name: parity_for(name, args, device, choice))
            write_results(args.out, NAME, payload, markdown(payload, args, choice), quiet=True)
    write_results(args.out, NAME, payload, markdown(payload, args, choice))
    return exit_code()


def markdown(payload: dict[str, Any], args, choice: dict[str, Any]) -> str:
    device = payload["meta"]["device"]
    md = [f"# Kernel parity ({payload['meta'].get('gpu', {}).get('name', device)})", ""]
    md.append(
        f"Auto choice: gdn={choice['gdn']} (backward {choice['gdn_backward']}), mamba={choice['mamba']}"
    )
    for name in args.models:
        res = payload.get(name) or {}
        md += ["", f"## {name}", ""]
        if "error" in res:
            md.append(f"FAILED: {res['error'][:300]}")
            continue
        md.append(
            f"S0 effect on logits (rel): {res.get('s0_effect_rel', float('nan')):.3g}; tolerance {res.get('tolerance')}; "
            f"auto backend works: {res.get('auto_backend_works')}"
        )
        cols = [
            "backend",
            "padding",
            "logits_rel_err",
            "grad_rel_err",
            "padded_vs_unpadded_rel",
            "within_tol",
        ]
        md += ["", md_table(res.get("rows", []), [*cols, "backward_error", "error"])]
        if res.get("decode"):
            md += ["", md_table(res["decode"], ["backend", "decode_logits_rel_err", "steps"])]
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
