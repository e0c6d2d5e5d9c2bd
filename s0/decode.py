"""The harness's decode engine: static cache, device-side buffers, no per-step host sync, and on CUDA one decode
step captured in a CUDA graph and replayed. Greedy and sampled (temperature, top-p) decoding, per-row EOS with an
early exit, prefill in chunks, always under `torch.no_grad()`, with whatever adapter is active.

    tokens = decode(model, input_ids, attention_mask, max_new_tokens=512, eos_ids=[eos], pad_id=pad)
    tokens = decode(..., temperature=0.7, top_p=0.95, row_seeds=torch.tensor([...]))   # sampled

Why: transformers' `generate` reads the all-finished flag on the host after every step and rebuilds masks, position
ids and a growing cache: 110.6 ms/step at batch 84 on an H200 with the Qwen3.5-4B architecture, against 12.6 ms for
this loop with a CUDA graph (issue 13; table below). Selected by `GenerationSpec(engine="static")`, or `"auto"` on CUDA.

What it equals (tests/test_decode.py, fp32 on CPU):
  * greedy: the tokens of HF greedy `generate` on the same left-padded batch, EOS and padding included (finished
    rows emit `pad_id`; the output stops at the step where every row has finished, as `generate`'s does);
  * sampled: the processed distribution of each step (logits in fp32, divided by the temperature, then HF's top-p
    rule, the order of `TemperatureLogitsWarper` then `TopPLogitsWarper`) equals `generate`'s scores for the same
    prefix. The draw itself is NOT `generate`'s (that one is torch.multinomial on the global RNG, so a row's tokens
    depend on every other row of its batch). Here each row carries its own seed, and step t of a row draws one
    uniform u = hash(row seed, t) and takes the inverse CDF of its distribution: a row's samples depend only on its
    seed, its prompt and the model, not on the batch it shares (up to the float noise of batched vs single
    forwards), and replaying a CUDA graph needs no RNG state.

Adapters: S0 and state-offset act through the kernel dispatchers of s0/adapters/injection.py (the forward hooks on
the mixers fire inside this loop as inside `generate`: S0 enters once, in the first prefill chunk; chunk 2+ and the
decode steps read the cache). LoRA (merged or not) lives inside the base model's modules. Prefix tuning (peft)
writes its virtual keys and values into the cache before the prefill, shifts positions by their number and unmasks
them, as `PrefixAdapter`'s generation inputs do for `generate`.

Supported: models whose layer types are full attention, linear attention (Qwen3.5 GatedDeltaNet) or hybrid
(FalconH1 Mamba-2 + attention), and whose forward takes a dict of masks (Qwen3.5, FalconH1, Qwen2; tested with
transformers 5.24, whose forward takes the cache as `cache`; before, `past_key_values`, which is passed then).
Every registered family with a tiny model is checked against `generate` in tests/test_decode.py (Qwen3-Next,
Bamba, Granite-hybrid, Zamba2, Jamba, Kimi-Linear too); pure recurrent models (Mamba, Mamba-2) are not run here.
`unsupported_reason(model)` says why a model is not.

Where the time goes (H200, Qwen3.5-4B architecture, random bf16 weights, S0 active, 64 new tokens, fla 0.6,
transformers 5.24; `python -m benchmarks.eval_throughput --engine-batches 1,16,84 --gdn-decode ...`, 2026-11-30):

    batch   greedy native   greedy fla_inplace (default)   sampled fla_inplace   bound
    1       6.78 ms         6.73 ms                        7.02 ms               2.01 ms
    16      8.89 ms         8.47 ms                        9.77 ms               -
    84      14.6 ms (29%)   12.6 ms (33%)                  15.4 ms (27%)         4.20 ms

  * the profile of one batch-84 step (torch.profiler): matmuls 3.4 ms, fla's recurrent kernel 2.9 ms, a 2 ms
    device-to-device copy of the fp32 GDN states (the cache's `update_recurrent_state` copy_; gone with
    fla_inplace), ~500 small copy_/mul/add/mean launches (dtype casts, contiguous(), RMSNorm) ~3 ms;
  * batch 1 is launch-bound: ~2.1k kernels per step at a few microseconds each is most of 6.8 ms (graph replay
    removes their host cost, not their count);
  * later the same day: fla's tile picked by timing (`_fla_tile`; BV 64, 4 warps at batch 84) gave 12.04 ms
    greedy (35%) and 14.9 ms sampled; `compile_step=True` 11.19 ms (38%) after 42 s of compiling
    (benchmarks/results/h200_2026-11-30b/). Before, dynamo broke the graph at every dispatcher and, past its
    recompile limit, ran the per-layer resumes eager: no gain at batch 84. Compiling stays opt-in
    (`resolve_compile` says why);
  * sampling adds ~3 ms at batch 84: top-p sorts the whole vocabulary of every row at every step (as HF does);
  * without fla, the PyTorch decode kernel materialises four state-sized temporaries per step:
    gdn_decode="inplace" removes them (slower than fla's kernel on the H200; for CPU or fla-less boxes);
  * knobs: `prefill_chunk` bounds prefill memory (fp32 chunk intermediates scale with chunk x batch);
    `stop_check_every` trades host syncs for wasted steps; `timings={}` returns prefill/capture/per-step times.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from dataclasses import dataclass

import torch
from torch import nn

# Prompt tokens per prefill forward; chunking a recurrent prefill is exact (tests).
DEFAULT_PREFILL_CHUNK = 1024
SUPPORTED_LAYER_TYPES = {"full_attention", "linear_attention", "hybrid"}
_M32 = 0xFFFFFFFF


@dataclass
class Decoded:
    tokens: torch.Tensor  # (B, L <= max_new_tokens) int64
    scores: torch.Tensor | None = None  # (B, L, V) fp32 processed scores per step (keep_scores=True only)


def unsupported_reason(model: nn.Module) -> str | None:
    """None when `decode` can run `model`; else one line saying why (callers fall back to `generate`)."""
    base, prefix = _unwrap(model)
    cfg = getattr(base, "config", None)
    types = set(getattr(cfg, "layer_types", None) or [])
    if not types:
        return f"{type(base).__name__} declares no layer_types"
    if types - SUPPORTED_LAYER_TYPES:
        return f"{type(base).__name__} has layer types {sorted(types - SUPPORTED_LAYER_TYPES)} (static engine: {sorted(SUPPORTED_LAYER_TYPES)})"
    if not types & {"full_attention", "hybrid"}:
        # Pure recurrent models (Mamba, Mamba-2) read `attention_mask` as one tensor, not the per-layer-type dict
        # this engine passes (it crashed on them); `generate` runs them.
        return f"{type(base).__name__} has no attention layer (static engine: attention or hybrid models)"
    if not {"cache", "past_key_values"} & set(inspect.signature(base.forward).parameters):
        return f"{type(base).__name__}.forward takes no cache argument"
    if prefix is not None and prefix[1] is None:
        return "an active peft prompt-learning method other than prefix tuning"
    return None


def _unwrap(model: nn.Module) -> tuple[nn.Module, tuple[int, object] | None]:
    """(the transformers model to call, (virtual tokens, get_prompt) when a peft prefix is active, else None).

    LoRA layers sit inside the base model's modules, so calling the base model runs them (merged or not, and
    peft's disable_adapter switches them off there too). Prefix tuning leaves the base model untouched; peft's
    disable_adapter turns it off by rebinding the PeftModel's `forward` to the base model's, which is how an
    inactive prefix is recognised here."""
    get_base = getattr(model, "get_base_model", None)
    if get_base is None:
        return model, None
    base = get_base()
    cfg = model.active_peft_config
    if not getattr(cfg, "is_prompt_learning", False) or getattr(model.forward, "__self__", None) is not model:
        return base, None
    if str(getattr(cfg.peft_type, "value", cfg.peft_type)) != "PREFIX_TUNING":
        return base, (0, None)
    return base, (int(cfg.num_virtual_tokens), model.get_prompt)


def row_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one row from the call's seed and the row's identity (prompt index, sample index)."""
    h = _mix32_int(seed & _M32)
    for k in keys:
        h = _mix32_int(h ^ _mix32_int((k + 0x9E3779B9) & _M32))
    return h


def _mix32_int(x: int) -> int:  # murmur3's fmix32 on a Python int
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _M32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """fmix32 on int64 lanes holding 32-bit values (products wrap in int64; the low 32 bits stay exact)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def uniforms(seeds: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """One float32 in (0, 1) per row for decode step `step` (a 1-element tensor), from the row's seed alone."""
    h = _mix32(seeds ^ _mix32((step * 0x9E3779B9 + 0x7F4A7C15) & _M32))
    return ((h >> 8).to(torch.float32) + 0.5) / float(1 << 24)


def process_logits(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """fp32 scores as `generate` samples from them: logits / temperature, then top-p (HF's TopPLogitsWarper rule:
    drop the tokens whose ascending cumulative probability is <= 1 - top_p, always keep the most likely)."""
    scores = logits.float()
    if temperature != 1.0:
        scores = scores / temperature
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        drop = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        drop[..., -1:] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return scores


def sample_from(scores: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw per row: the first token whose cumulative probability reaches u (zero-mass tokens never)."""
    cdf = scores.softmax(dim=-1).cumsum(dim=-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
    return idx.clamp_max(scores.shape[-1] - 1)


def _fallback(fla: bool, query, key, value, g, beta, initial_state, output_final_state, use_qk_l2norm_in_kernel,
              kwargs):  # fmt: skip
    """For any call the in-place decode step does not take (prefill, no state): with `fla`, the kernel transformers
    resolved; else transformers' PyTorch one (the in-place PyTorch step must run where fla cannot, e.g. on CPU)."""
    from transformers.models.qwen3_5 import modeling_qwen3_5 as qm

    from s0.adapters.injection import original, pytorch_kernel

    return (original if fla else pytorch_kernel)(qm, "torch_recurrent_gated_delta_rule")(
        query, key, value, g=g, beta=beta, initial_state=initial_state, output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, **kwargs,
    )  # fmt: skip


def _gdn_step_torch(q, k, v, g, beta, state, l2norm: bool) -> torch.Tensor:
    """transformers' `torch_recurrent_gated_delta_rule` for one token, the fp32 state (B, Hv, K, V) updated in place.

    The reference materialises four state-sized temporaries per step (decayed state, k*S, k outer delta, S*q) and
    the cache then copies the new state into its buffer; here the state is decayed in place, the rank-1 update is
    one in-place batched matmul (baddbmm_) and the readouts are batched matmuls."""
    b, _, n_k, k_dim = k.shape
    n_v, v_dim = v.shape[-2:]
    q, k = q[:, 0].float(), k[:, 0].float()  # (B, Hk, K)
    if n_k != n_v:  # grouped value attention, as the reference: each q/k head serves n_v // n_k value heads
        q, k = q.repeat_interleave(n_v // n_k, dim=1), k.repeat_interleave(n_v // n_k, dim=1)
    if l2norm:
        q = q * torch.rsqrt((q * q).sum(dim=-1, keepdim=True) + 1e-6)
        k = k * torch.rsqrt((k * k).sum(dim=-1, keepdim=True) + 1e-6)
    q = q / (k_dim**0.5)
    flat = state.view(b * n_v, k_dim, v_dim)
    state.mul_(g[:, 0].float().exp()[..., None, None])
    kv_mem = torch.bmm(k.reshape(-1, 1, k_dim), flat).view(b, n_v, v_dim)
    delta = (v[:, 0].float() - kv_mem) * beta[:, 0].float()[..., None]
    flat.baddbmm_(k.reshape(-1, k_dim, 1), delta.reshape(-1, 1, v_dim))
    return torch.bmm(q.reshape(-1, 1, k_dim), flat).view(b, 1, n_v, v_dim).to(v.dtype)


# fla's tile (BV, num_warps) per decode shape, picked by timing on the first call (`_fla_tile`); benchmarks report it.
FLA_TILES: dict[tuple[int, ...], tuple[int, int]] = {}
FLA_TILE_CANDIDATES = ((8, 1), (16, 1), (16, 2), (32, 2), (32, 4), (64, 4))
FLA_DEFAULT_TILE = (8, 1)  # what fla's own wrapper launches (fla 0.6)


def _gdn_step_fla(q, k, v, g, beta, state, l2norm: bool) -> torch.Tensor:
    """fla's fused recurrent kernel for one token, writing the new state over the old one (h0 = ht = state).

    fla's wrapper allocates a fresh final state and transformers' cache then copies it into its buffer: at batch
    84 on the Qwen3.5-4B architecture that copy was 2 ms of a 14.6 ms step (H200 profile, issue 13). Each program
    loads its (K, BV) tile of h0 before it stores the same tile of ht and tiles do not overlap, so ht = h0 is safe.
    Called with the arguments fla's own `fused_recurrent_gated_delta_rule_fwd` passes (fla 0.6), except the tile."""
    import triton
    from fla.ops.gated_delta_rule.fused_recurrent import fused_recurrent_gated_delta_rule_fwd_kernel as kernel

    b, t, h, k_dim = k.shape
    hv, v_dim = v.shape[2], v.shape[-1]

    def launch(tile: tuple[int, int], h_state: torch.Tensor, o: torch.Tensor) -> None:
        bv, warps = tile
        kernel[(triton.cdiv(v_dim, bv) * b * hv,)](
            q=q, k=k, v=v, g=g, gk=None, gv=None, beta=beta, A_log=None, dt_bias=None, o=o, h0=h_state,
            ht=h_state, cu_seqlens=None, scale=k_dim**-0.5, T=t, H=h, HV=hv, K=k_dim, V=v_dim,
            BK=triton.next_power_of_2(k_dim), BV=bv, IS_BETA_HEADWISE=beta.ndim != v.ndim,
            USE_QK_L2NORM_IN_KERNEL=l2norm, APPLY_BETA_SIGMOID=False, ALLOW_NEG_EIGVAL=False,
            STATE_V_FIRST=False, num_warps=warps, num_stages=3,
        )  # fmt: skip

    o = torch.empty_like(v)
    launch(_fla_tile((b, h, hv, k_dim, v_dim, int(l2norm)), launch, state, o), state, o)
    return o


def _fla_tile(key: tuple[int, ...], launch, state: torch.Tensor, o: torch.Tensor) -> tuple[int, int]:
    """The fastest tile for this shape, timed once on a scratch copy of the state (never inside a CUDA graph
    capture: there, an untimed shape takes fla's default). The kernel moves the fp32 state, 2.9 ms of a 12.6 ms
    batch-84 step with fla's tile (H200, issue 13); the tile decides how many bytes are in flight."""
    if key in FLA_TILES:
        return FLA_TILES[key]
    if torch.cuda.is_current_stream_capturing():
        return FLA_DEFAULT_TILE
    scratch, scratch_o = state.clone(), torch.empty_like(o)
    v_dim = key[-2]
    times = {}
    for tile in [c for c in FLA_TILE_CANDIDATES if c[0] <= max(8, 1 << (v_dim - 1).bit_length())]:
        launch(tile, scratch, scratch_o)  # compiles
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            launch(tile, scratch, scratch_o)
        stop.record()
        stop.synchronize()
        times[tile] = start.elapsed_time(stop)
    FLA_TILES[key] = min(times, key=times.get)
    return FLA_TILES[key]


@torch.library.custom_op("s0::gdn_decode_step", mutates_args=("state",))
def gdn_decode_step(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, state: torch.Tensor,
    l2norm: bool, fla: bool,
) -> torch.Tensor:  # fmt: skip
    """One GatedDeltaNet decode token from an fp32 contiguous state (B, Hv, K, V), updated in place; returns the
    output (B, 1, Hv, V). A custom op, so torch.compile keeps it whole (dynamo would otherwise trace into fla's
    launcher) and knows it mutates only `state`. `fla`: fla's Triton kernel (CUDA), else PyTorch batched matmuls."""
    step = _gdn_step_fla if fla else _gdn_step_torch
    return step(q, k, v, g, beta, state, l2norm)


@gdn_decode_step.register_fake
def _(q, k, v, g, beta, state, l2norm, fla):
    return torch.empty_like(v)


def _gdn_decode(fla: bool):
    """A drop-in for transformers' `torch_recurrent_gated_delta_rule` that sends one-token steps from an fp32
    contiguous state to `gdn_decode_step`; anything else (a prefill, no state yet, varlen) to the resolved kernel."""

    def kernel(query, key, value, g, beta, initial_state=None, output_final_state=False,
               use_qk_l2norm_in_kernel=False, **kwargs):  # fmt: skip
        state = initial_state
        if (
            state is None
            or query.shape[1] != 1
            or state.dtype != torch.float32
            or not state.is_contiguous()
            or (fla and not query.is_cuda)
            or kwargs.get("cu_seqlens") is not None
        ):
            return _fallback(fla, query, key, value, g, beta, initial_state, output_final_state,
                             use_qk_l2norm_in_kernel, kwargs)  # fmt: skip
        q, k, v, g, beta = (t.contiguous() for t in (query, key, value, g, beta))
        out = torch.ops.s0.gdn_decode_step(q, k, v, g, beta, state, use_qk_l2norm_in_kernel, fla)
        return out, (state if output_final_state else None)

    kernel.__name__ = "gdn_decode_" + ("fla_inplace" if fla else "inplace")
    return kernel


gdn_decode_inplace = _gdn_decode(fla=False)
gdn_decode_fla_inplace = _gdn_decode(fla=True)
GDN_DECODE = {"inplace": gdn_decode_inplace, "fla_inplace": gdn_decode_fla_inplace}
# The argument names _gdn_step_fla passes to fla's kernel (fla 0.6); "auto" uses it only when they match.
_FLA_KERNEL_ARGS = {"q", "k", "v", "g", "gk", "gv", "beta", "A_log", "dt_bias", "o", "h0", "ht", "cu_seqlens", "scale",
                    "T", "H", "HV", "K", "V", "BK", "BV", "IS_BETA_HEADWISE", "USE_QK_L2NORM_IN_KERNEL",
                    "APPLY_BETA_SIGMOID", "ALLOW_NEG_EIGVAL", "STATE_V_FIRST"}  # fmt: skip


def resolve_gdn_decode(choice: str, device: torch.device) -> str:
    """ "auto": fla_inplace on CUDA when fla is installed, its kernel takes the arguments it is called with (checked
    by name) and the GDN backend route is not forced to PyTorch (backend.gdn=torch); else native."""
    if choice != "auto":
        return choice
    if device.type != "cuda":
        return "native"
    from s0.adapters.injection import get_routes

    try:
        from fla.ops.gated_delta_rule.fused_recurrent import (
            fused_recurrent_gated_delta_rule_fwd_kernel as kernel,
        )
    except Exception:  # no fla (or another layout of it): the resolved kernel
        return "native"
    names = set(getattr(getattr(kernel, "fn", kernel), "arg_names", None) or [])
    return "fla_inplace" if names >= _FLA_KERNEL_ARGS and get_routes()["gdn"] != "torch" else "native"


def _chunk_bounds(p: int, chunk: int) -> list[tuple[int, int]]:
    chunk = max(2, chunk)
    bounds = [(s, min(p, s + chunk)) for s in range(0, p, chunk)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        # A 1-token chunk after the first would take the mixers' one-token decode path (no pad masking there);
        # fold it into the previous chunk.
        bounds[-2:] = [(bounds[-2][0], p)]
    return bounds


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
COMPILE_BACKEND = (
    "inductor"  # tests use "eager": dynamo's tracing (graph breaks, guards) without code generation
)
# dynamo compiles the first shape static and, when a batch size or cache length changes, once more with that
# dimension symbolic (automatic dynamic shapes), so a run compiles two or three graphs. Its default limit of 8
# per code object would, once reached, run every later shape eager without a word: raised while decoding.
RECOMPILE_LIMIT = 64


def _compiled(base: nn.Module) -> nn.Module:
    """One torch.compile wrapper per model and backend, kept outside the module tree (not a submodule, not in
    state_dict)."""
    per_model = _COMPILED.setdefault(base, {})
    if COMPILE_BACKEND not in per_model:
        per_model[COMPILE_BACKEND] = torch.compile(base, backend=COMPILE_BACKEND)
    return per_model[COMPILE_BACKEND]


def resolve_compile(choice: bool, model: nn.Module, keep_scores: bool) -> bool:
    """Whether the decode step's forward runs through torch.compile: only when asked for, and never where an
    adapter acts at every decode step (state-offset's readout: a compiled dispatcher cannot see it,
    `current_call`), which is refused in one line rather than dropped. Kept scores take the eager path.

    Off by default, measured (H200, Qwen3.5-4B architecture, bf16, batch 84, 2026-11-30): the compiled step took
    11.2 ms against 12.6 ms eager, and compiling took 37-67 s per graph (two or three per run). One evaluation of
    84 x 512 tokens saves under a second; the compile pays off only after ~30k decode steps in one process."""
    from s0.adapters.injection import per_step_layers

    per_step = per_step_layers(_unwrap(model)[0]) if choice else []
    if per_step:
        raise ValueError(
            f"compile_step=True: an active adapter acts at every decode step ({per_step[0]}, ...: a state-offset "
            "readout), which a compiled step cannot see; use compile_step=False"
        )
    return bool(choice) and not keep_scores


class _Clock:
    """Phase times for benchmarks: a device sync at each lap, and nothing at all when no dict is given."""

    def __init__(self, device: torch.device, out: dict | None):
        self.device, self.out = device, out
        self.t = self._now() if out is not None else 0.0

    def _now(self) -> float:
        import time

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, name: str) -> None:
        if self.out is not None:
            now = self._now()
            self.out[name], self.t = now - self.t, now


@torch.no_grad()
def decode(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    temperature: float | None = None,
    top_p: float = 1.0,
    row_seeds: torch.Tensor | list[int] | None = None,
    cuda_graph: bool = True,
    stop_check_every: int = 16,
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    forced: torch.Tensor | None = None,
    keep_scores: bool = False,
    gdn_decode: str = "auto",
    timings: dict | None = None,
    compile_step: bool = False,
) -> Decoded:
    """New tokens (B, <= max_new_tokens) of one left-padded batch; `temperature=None` decodes greedily.

    `row_seeds` (B,) give each sampled row its random stream (default: the row index). `forced` (B, n) feeds
    those tokens instead of the chosen ones (teacher forcing, for the tests that compare distributions with
    `generate`'s); `keep_scores` returns each step's processed fp32 scores (eager, no graph). The host reads the
    all-finished flag once every `stop_check_every` steps; on CUDA one step is captured per call (a changed
    adapter can never replay a stale graph). `gdn_decode` picks the GatedDeltaNet decode-step kernel: "native"
    (whatever transformers resolved, fla or PyTorch), "inplace" (`gdn_decode_inplace`, PyTorch), "fla_inplace"
    (`gdn_decode_fla_inplace`, CUDA with fla) or "auto" (`resolve_gdn_decode`: fla_inplace where it applies). A `timings` dict receives
    prefill_s, capture_s, decode_s, steps, step_s (three device syncs in all, for benchmarks), gdn_decode and
    compiled. `compile_step` runs the decode step's model forward through `torch.compile` (fewer, fused kernels per
    layer; see RECOMPILE_LIMIT for how often it compiles; off by default: `resolve_compile` says why)."""
    gdn_decode = resolve_gdn_decode(gdn_decode, input_ids.device)
    compile_step = resolve_compile(compile_step, model, keep_scores)
    if timings is not None:
        timings.update(gdn_decode=gdn_decode, compiled=compile_step)
    if gdn_decode not in ("native", *GDN_DECODE):
        raise ValueError(f"gdn_decode '{gdn_decode}' is not one of native, {', '.join(GDN_DECODE)}")
    from s0.adapters.injection import install_known, override_kernel

    args = (model, input_ids, attention_mask, max_new_tokens, eos_ids, pad_id, temperature, top_p, row_seeds,
            cuda_graph, stop_check_every, prefill_chunk, forced, keep_scores, timings, compile_step)  # fmt: skip
    with contextlib.ExitStack() as stack:
        if compile_step:
            from s0.adapters.kinds.common import step_without_calls

            stack.enter_context(torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT))
            stack.enter_context(step_without_calls())  # resolve_compile checked that no adapter acts per step
        if gdn_decode == "native":
            return _decode(*args)
        install_known()  # the kernel names go through s0's dispatchers, which honour the override
        kernel = (
            gdn_decode_inplace if gdn_decode == "inplace" else GDN_DECODE[gdn_decode]
        )  # tests patch the name
        stack.enter_context(override_kernel("torch_recurrent_gated_delta_rule", kernel))
        return _decode(*args)


def _decode(model, input_ids, attention_mask, max_new_tokens, eos_ids, pad_id, temperature, top_p, row_seeds,
            cuda_graph, stop_check_every, prefill_chunk, forced, keep_scores, timings, compile_step) -> Decoded:  # fmt: skip
    from transformers import StaticCache

    reason = unsupported_reason(model)
    if reason is not None:
        raise ValueError(f"engine='static' cannot run this model: {reason}; use engine='hf'")
    base, prefix = _unwrap(model)
    # The name the forward takes the cache under: `cache` from transformers 5.24, `past_key_values` before.
    cache_key = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
    dev = input_ids.device
    b, p = input_ids.shape
    n = max_new_tokens
    nv = prefix[0] if prefix else 0
    max_len = nv + p + n
    sampled = temperature is not None
    seeds = torch.as_tensor(
        row_seeds if row_seeds is not None else list(range(b)), dtype=torch.long, device=dev
    )
    seeds = seeds & _M32
    eos = torch.tensor(eos_ids or [-1], device=dev)
    counter = torch.zeros(1, dtype=torch.long, device=dev)  # the step being chosen (0 = from the prefill)
    if forced is not None:
        forced = forced.to(dev)

    def choose(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not sampled:
            return logits.float().argmax(-1), (logits.float() if keep_scores else None)
        scores = process_logits(logits, temperature, top_p)
        return sample_from(scores, uniforms(seeds, counter)), scores

    def pick(nxt: torch.Tensor) -> torch.Tensor:
        if forced is None:
            return nxt
        return forced.index_select(1, counter.clamp_max(forced.shape[1] - 1)).squeeze(1)

    clock = _Clock(dev, timings)
    # ---- prefill, in chunks: the recurrent states and conv windows carry across chunks inside the cache
    cache = StaticCache(config=base.config, max_cache_len=max_len)
    valid_prompt = attention_mask.bool()
    valid = torch.cat([torch.ones(b, nv, dtype=torch.bool, device=dev), valid_prompt], dim=1)
    if prefix:
        for layer_idx, (keys, values, *_) in enumerate(prefix[1](b)):
            cache.update(keys, values, layer_idx)
    pos = (valid_prompt.long().cumsum(-1) - 1).masked_fill(
        ~valid_prompt, 1
    ) + nv  # from each row's first token
    cols = torch.arange(max_len, device=dev)
    valid_cols = torch.nn.functional.pad(valid, (0, max_len - valid.shape[1]))  # (B, max_len)
    logits = None
    for s, e in _chunk_bounds(p, prefill_chunk):
        q = torch.arange(nv + s, nv + e, device=dev)
        allowed = (cols[None, None, :] <= q[None, :, None]) & valid_cols[:, None, :]
        allowed |= (
            cols[None, None, :] == q[None, :, None]
        )  # a pad query sees itself rather than nothing (no NaN)
        lin = valid_prompt[:, s:e]
        masks = {"full_attention": allowed[:, None], "linear_attention": None if bool(lin.all()) else lin}
        logits = base(input_ids=input_ids[:, s:e], attention_mask=masks, position_ids=pos[:, s:e],
                      **{cache_key: cache}, use_cache=True, logits_to_keep=1).logits[:, -1]  # fmt: skip
        del allowed, masks
    first, first_scores = choose(logits)
    tok = pick(first)[:, None]  # (B, 1): the next input token, a static buffer
    done = torch.isin(tok[:, 0], eos)
    out = torch.full((b, n), pad_id, dtype=torch.long, device=dev)
    out[:, :1] = tok
    scores_out = [first_scores] if keep_scores else None
    last_scores = first_scores
    step_pos = pos[:, -1:] + 1
    dmask = torch.zeros(b, 1, 1, max_len, dtype=torch.bool, device=dev)
    dmask[:, 0, 0, : nv + p] = valid
    slot = torch.full((1,), nv + p, dtype=torch.long, device=dev)
    del logits

    forward = _compiled(base) if compile_step else base

    def step() -> None:  # device buffers only, no host sync: capturable
        nonlocal last_scores
        dmask.index_fill_(3, slot, True)
        step_logits = forward(input_ids=tok, attention_mask={"full_attention": dmask, "linear_attention": None},
                           position_ids=step_pos, **{cache_key: cache}, use_cache=True).logits[:, -1]  # fmt: skip
        counter.add_(1)
        chosen, last_scores = choose(step_logits)
        nxt = pick(chosen)
        tok.copy_(torch.where(done, pad_id, nxt)[:, None])  # HF: finished rows emit pad and feed pad
        done.logical_or_(torch.isin(nxt, eos))
        out.index_copy_(1, counter, tok)
        step_pos.add_(1)
        slot.add_(1)

    clock.lap("prefill_s")
    graph = None
    steps = 1
    if cuda_graph and not keep_scores and dev.type == "cuda" and n > 4:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm up (Triton compile, cuBLAS handles) outside the capture
            for _ in range(2):
                step()
                steps += 1
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
    clock.lap("capture_s")  # with the two warm-up steps, which are counted in `steps`
    first_timed = steps
    while steps < n:
        if steps % max(1, stop_check_every) == 0 and bool(done.all()):
            break  # every row has emitted EOS (one host sync per `stop_check_every` steps)
        if graph is not None:
            graph.replay()
        else:
            step()
            if keep_scores:
                scores_out.append(last_scores.clone())
        steps += 1
    clock.lap("decode_s")
    if timings is not None:
        timings.update(steps=steps, step_s=timings["decode_s"] / max(1, steps - first_timed))
    tokens = out[:, :steps]
    # `generate` stops at the step where the last row finished: cut the pad columns the periodic check left.
    hit = torch.isin(tokens, eos)
    if bool(hit.any(-1).all()):
        steps = int(hit.float().argmax(-1).max()) + 1
        tokens = tokens[:, :steps]
    scores = torch.stack(scores_out[:steps], dim=1) if keep_scores else None
    return Decoded(tokens, scores)


def static_greedy(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    eos_ids: list[int],
    pad_id: int,
    cuda_graph: bool = True,
    stop_check_every: int = 16,
) -> torch.Tensor:
    """Greedy `decode`, tokens only (the name benchmarks and older tests call)."""
    return decode(
        model, input_ids, attention_mask, max_new_tokens, eos_ids, pad_id,
        cuda_graph=cuda_graph, stop_check_every=stop_check_every,
    ).tokens  # fmt: skip
