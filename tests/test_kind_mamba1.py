"""Mamba-1 recurrence kind (s0/adapters/kinds/mamba1.py) on a tiny transformers `mamba` model: exactness against a
per-token reference written from Mamba-1's equations, padding, gradients, save/load, and decode.

    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t        (diagonal: per channel d and state index n)
    y_t = C_t h_t + D x_t,  gated by silu(z_t)

Float64 models. The mixer rounds A = -exp(A_log) to float32 (`A_log.float()`); the reference uses that same A,
so the comparison is float64-exact up to the closed form exp(A cumsum dt) against the product of exp(dt A).
"""

from __future__ import annotations

import functools
import sys

import pytest
import torch
import torch.nn.functional as F

from s0.adapters import S0Adapter, StateOffsetAdapter, load_adapter
from s0.adapters import injection as inj
from s0.adapters.kinds import KINDS, recurrent_layers
from s0.models import TINY_ARCH, build_model, tiny_tokenizer
from tests.test_injection import random_s0 as random_adapter
from tests.test_injection import rel_err

inj.install_known()  # on a machine with mamba-ssm, CPU tensors must not reach its CUDA kernels

pytestmark = pytest.mark.usefixtures("one_thread")
RTOL = 1e-9  # mixer outputs, float64; measured ~1e-15 (the closed-form S0 term against the product of decays)
LOGITS_RTOL = 1e-6  # MambaForCausalLM returns float32 logits (`.float()`), even from a float64 model


@functools.cache
def tiny(init: float = 0.1):
    return build_model("mamba", {**TINY_ARCH["mamba"], "initializer_range": init}, dtype=torch.float64)


# ------------------------------------------------------------------ reference (Mamba-1's equations)
def mamba1_recurrence(x, dt, A, B, C, D, s0, offset=None):
    """Token by token. x, dt (T, Di) with dt after softplus; A (Di, N); B, C (T, N); D (Di,); s0, offset (Di, N).
    y_t = (h_t + dS) C_t + D x_t: state-offset reads h_t + dS, the recurrence does not see dS."""
    read = torch.zeros_like(s0) if offset is None else offset
    h, outs = s0, []
    for t in range(x.shape[0]):
        h = torch.exp(dt[t][:, None] * A) * h + dt[t][:, None] * B[t][None, :] * x[t][:, None]
        outs.append((h + read) @ C[t] + D * x[t])
    return torch.stack(outs), h


def ref_mixer(mod, h, s0, offset=None):
    """transformers' MambaMixer on one unpadded sequence h (T, hidden), from the equations, weights from `mod`."""
    x, z = mod.in_proj(h).chunk(2, dim=-1)
    w = mod.conv1d.weight  # (Di, 1, width): depthwise causal conv, then SiLU
    x = F.silu(F.conv1d(F.pad(x.T[None], (w.shape[-1] - 1, 0)), w, mod.conv1d.bias, groups=w.shape[0])[0].T)
    dt_r, B, C = mod.x_proj(x).split([mod.time_step_rank, mod.ssm_state_size, mod.ssm_state_size], dim=-1)
    dt = F.softplus(mod.dt_proj(dt_r))
    A = -torch.exp(mod.A_log.float()).to(h.dtype)  # the mixer's own float32 rounding of A
    y, _ = mamba1_recurrence(x, dt, A, B, C, mod.D, s0, offset)
    return mod.out_proj(y * F.silu(z))


def capture(model):
    seen, handles = {}, []
    for r in recurrent_layers(model):

        def hook(mod, args, kwargs, out, idx=r.index):
            seen[idx] = kwargs.get("hidden_states", args[0] if args else None), out

        handles.append(r.module.register_forward_hook(hook, with_kwargs=True))
    return seen, handles


def mixer_outputs(model, adapter, **inputs):
    seen, handles = capture(model)
    try:
        with adapter.active(), torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


# ------------------------------------------------------------------ tests
def test_registered_kind_and_state_shape():
    """Every layer of the tiny mamba model is a mamba1 layer with state (d_inner, d_state) = (64, 8)."""
    layers = recurrent_layers(tiny())
    assert [(r.kind, r.state_shape) for r in layers] == [("mamba1", (64, 8))] * 3
    assert set(KINDS["mamba1"].kernels) == {
        "mamba_selective_scan",
        "mamba_selective_state_update",
        "mamba_inner_fn",
    }
    assert "no initial state" in KINDS["mamba1"].kernel_note
    assert S0Adapter(tiny()).num_trainable() == 3 * 64 * 8


@pytest.mark.parametrize("positions", [None, [0, 2]])
@pytest.mark.parametrize("cls", [S0Adapter, StateOffsetAdapter])
def test_layer_outputs_match_reference_recurrence(positions, cls):
    """Each layer's output at every position equals the recurrence run from alpha * S0 (selected layers) or 0;
    for state-offset, from 0 with the readout on h_t + alpha dS."""
    model = tiny()
    adapter = random_adapter(model, alpha=0.5, layers=positions, cls=cls)
    selected = {r.index for r in adapter.layers}
    seen = mixer_outputs(
        model, adapter, input_ids=torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240, 3, 100, 12]])
    )
    for r in recurrent_layers(model):
        h_in, out = seen[r.index]
        zero = torch.zeros(r.state_shape, dtype=torch.float64)
        state = 0.5 * adapter.states[str(r.index)] if r.index in selected else zero
        s0, offset = (zero, state) if cls is StateOffsetAdapter else (state, None)
        with torch.no_grad():
            ref = ref_mixer(r.module, h_in[0], s0, offset)
            ref0 = ref_mixer(r.module, h_in[0], zero)
        assert rel_err(out[0], ref) < RTOL, (r.index, rel_err(out[0], ref))
        if r.index in selected:  # the state made a difference: not a silent no-op
            assert rel_err(ref0, ref) > 1e-3


def test_left_padded_rows_match_reference_and_naive_padding_does_not():
    """Pads are identity steps: a left-padded row equals the unpadded reference from S0. Without the fix the
    pads decay S0 by exp(softplus(dt_bias) A) per pad, and the same check fails."""
    model, tok = tiny(), tiny_tokenizer()
    enc = tok(["ab", "a longer prompt here"], return_tensors="pt", padding=True)
    n_real = int(enc.attention_mask[0].sum())
    assert n_real < enc.input_ids.shape[1]
    for fix, ok in ((True, True), (False, False)):
        adapter = random_adapter(model, alpha=1.0, fix_padding=fix)
        seen = mixer_outputs(model, adapter, **enc)
        errs = []
        for r in recurrent_layers(model):
            h_in, out = seen[r.index]
            with torch.no_grad():
                ref = ref_mixer(r.module, h_in[0, -n_real:], adapter.states[str(r.index)])
            errs.append(rel_err(out[0, -n_real:], ref))
        assert (max(errs) < RTOL) == ok, (fix, errs)


def greedy(model, tok, prompts, n_new=6):
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[:, enc.input_ids.shape[1] :].tolist()


def test_batched_generation_equals_one_at_a_time():
    """Left-padded batch with S0 active: the same greedy tokens as one prompt at a time, and S0 changes them."""
    model, tok = tiny(init=0.3), tiny_tokenizer()
    prompts = ["a", "def f(x):", "hello world", "12+34="]
    base = [greedy(model, tok, [p])[0] for p in prompts]
    adapter = random_adapter(model, scale=3.0, alpha=1.0)
    with adapter.active():
        singles = [greedy(model, tok, [p])[0] for p in prompts]
        batched = greedy(model, tok, prompts)
    assert singles != base
    assert batched == singles


def test_gradcheck_states_through_whole_model_fp64():
    """gradcheck on the states of layers 0 and 2 through the whole tiny model (the S0 term is PyTorch, so the
    library path itself is differentiated). MambaRMSNorm computes in float32 even in a float64 model, hence the
    larger finite-difference step, as for Qwen3.5 in test_injection.py."""
    model = tiny()
    adapter = random_adapter(model, scale=0.3, alpha=0.7, alpha_mode="train_and_inference", layers=[0, 2])
    ids = torch.tensor([[5, 77, 130, 9, 201]])
    weights = torch.randn(1, 5, TINY_ARCH["mamba"]["hidden_size"], generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)  # fmt: skip
    names, real = list(adapter.states.keys()), adapter.states

    def f(*states):
        adapter.states = dict(zip(names, states))
        try:
            # the backbone's float64 output: the LM head returns float32 logits, below gradcheck's resolution
            return (model.backbone(input_ids=ids).last_hidden_state * weights).sum()
        finally:
            adapter.states = real

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in adapter.parameters())
    with adapter.active(), adapter.train_mode():
        assert torch.autograd.gradcheck(f, inputs, fast_mode=True, eps=1e-3, atol=1e-4, rtol=1e-3)
        grads = torch.autograd.grad(f(*inputs), inputs)
    assert all(g.abs().max() > 0 for g in grads)


def test_save_load_round_trip(tmp_path):
    """The adapter's safetensors format: same tensors, same kinds in the sidecar, same logits after loading."""
    model = tiny()
    adapter = random_adapter(model, alpha=0.5)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18]])
    with adapter.active(), torch.no_grad():
        before = model(input_ids=ids).logits
    adapter.save(tmp_path / "a")
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()
    fresh = build_model("mamba", {**TINY_ARCH["mamba"], "initializer_range": 0.1}, dtype=torch.float64)
    again = load_adapter(tmp_path / "a", fresh)
    assert again.saved_meta["layer_kinds"] == ["mamba1"] * 3
    assert again.saved_meta["state_shapes"] == {f"s0.{i}": [64, 8] for i in range(3)}
    for k, v in adapter.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
    with again.active(), torch.no_grad():
        after = fresh(input_ids=ids).logits
    assert torch.equal(before, after)


def counting_adapter(model, cls=S0Adapter, **kw):
    """An adapter whose injected() calls are counted per layer (the dispatcher calls it once per injection)."""
    adapter = random_adapter(model, cls=cls, **kw)
    calls: list[int] = []
    real = adapter.injected

    def injected(i):
        calls.append(i)
        return real(i)

    adapter.injected = injected
    return adapter, calls


@pytest.mark.parametrize("cls", [S0Adapter, StateOffsetAdapter])
def test_prefill_then_decode_equals_full_forward_and_s0_enters_once(cls):
    """Prefill, then one-token decode steps through the cache, equal one full forward: the state enters once.
    S0 is read once per layer (at the prefill) however many decode steps follow; state-offset at every step."""
    from transformers import DynamicCache

    model = tiny()
    adapter, calls = counting_adapter(model, cls=cls, scale=3.0, alpha=0.5)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240, 3, 100]])
    n_layers = len(recurrent_layers(model))
    with adapter.active(), torch.no_grad():
        full = model(input_ids=ids).logits
        calls.clear()
        cache = DynamicCache(config=model.config)
        parts = [model(input_ids=ids[:, :6], cache=cache, use_cache=True).logits]
        for t in range(6, ids.shape[1]):
            parts.append(model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits)
    assert rel_err(torch.cat(parts, dim=1), full) < LOGITS_RTOL
    n_steps = ids.shape[1] - 6
    assert len(calls) == n_layers * (1 if cls is S0Adapter else 1 + n_steps)
    with torch.no_grad():
        assert rel_err(model(input_ids=ids).logits, full) > 1e-4  # the state really changed the outputs


def test_second_multi_token_segment_does_not_inject_again():
    """transformers' Mamba-1 runs a multi-token segment into a filled cache from a zero state (its scan takes
    none); S0 must not enter there either: once per sequence, before the first token."""
    from transformers import DynamicCache

    model = tiny()
    adapter, calls = counting_adapter(model, alpha=0.5)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240]])
    with adapter.active(), torch.no_grad():
        cache = DynamicCache(config=model.config)
        model(input_ids=ids[:, :5], cache=cache, use_cache=True)
        assert len(calls) == 3
        model(input_ids=ids[:, 5:], cache=cache, use_cache=True)
    assert len(calls) == 3


def test_generate_decode_steps_run_the_base_kernel_with_no_injection_active():
    """In `generate`, every one-token decode step of an S0 layer runs transformers' kernel with nothing active
    (the pre-hook skips), and S0 is read exactly once per layer."""
    import transformers.models.mamba.modeling_mamba as mm

    model, tok = tiny(), tiny_tokenizer()
    kernel = inj.pytorch_kernel(mm, "mamba_selective_state_update")
    skipped: list[bool] = []

    def spy(*args, **kwargs):
        skipped.append(inj.CURRENT.get() is None)
        return kernel(*args, **kwargs)

    adapter, calls = counting_adapter(model, alpha=0.5)
    n_new = 5
    with inj.override_kernel("mamba_selective_state_update", spy), adapter.active():
        greedy(model, tok, ["def f(x):", "a"], n_new=n_new)
    n_layers = len(recurrent_layers(model))
    assert len(skipped) == (n_new - 1) * n_layers and all(skipped)
    assert len(calls) == n_layers


def test_decode_step_runs_the_same_ops_with_s0():
    """Zero overhead: a decode step with S0 active executes exactly the base model's aten ops."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import DynamicCache

    class Trace(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    def step_ops(model):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([[5, 77, 130, 9]]), cache=cache, use_cache=True)
            with Trace() as trace:
                model(input_ids=out.logits[:, -1:].argmax(-1), cache=cache, use_cache=True)
        return trace.ops

    model = tiny()
    base = step_ops(model)
    with random_adapter(model, alpha=0.5).active():
        assert step_ops(model) == base
    with random_adapter(model, alpha=0.5, cls=StateOffsetAdapter).active():
        assert len(step_ops(model)) > len(base)


def test_fused_training_path_declines_while_active(monkeypatch):
    """With mamba-ssm, MambaMixer in train mode without a cache calls mamba_inner_fn, which takes no initial
    state. Simulate a fused kernel: with S0 active the dispatcher declines it and the result is unchanged."""
    import transformers.models.mamba.modeling_mamba as mm

    model = tiny()
    adapter = random_adapter(model, alpha=0.5)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18]])
    with adapter.active(), torch.no_grad():
        expected = model(input_ids=ids).logits

    def fake_fused(*args, **kwargs):
        raise AssertionError("fused path must not run while S0 is active")

    factory = KINDS["mamba1"].dispatchers["mamba_inner_fn"]
    monkeypatch.setattr(mm, "mamba_inner_fn", factory("mamba_inner_fn", fake_fused))
    model.train()
    try:
        with adapter.active(), torch.no_grad():
            got = model(input_ids=ids).logits
    finally:
        model.eval()
    assert torch.equal(got, expected)
    assert sys.modules[type(recurrent_layers(model)[0].module).__module__] is mm


def other_mamba1_model(name: str):
    """Tiny FalconMamba (float64) and Jamba (float32: its MoE grouped matmul refuses float64) from transformers'
    own classes: the same kernel names, found by structure, no family entry needed."""
    import transformers

    if name == "falcon_mamba":
        cfg = transformers.FalconMambaConfig(
            vocab_size=272, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, time_step_rank=4
        )
        dtype = torch.float64
    else:
        cfg = transformers.JambaConfig(
            vocab_size=272, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, mamba_d_state=8, mamba_expand=2, mamba_dt_rank=4, num_experts=2,
            num_experts_per_tok=1, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
            expert_layer_offset=1,
        )  # fmt: skip
        dtype = torch.float32
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(cfg).to(dtype).eval()
    model.requires_grad_(False)
    return model, dtype


@pytest.mark.parametrize("name", ["falcon_mamba", "jamba"])
def test_falcon_mamba_and_jamba_layers_take_s0_once_and_ignore_pads(name):
    """The other transformers families with Mamba-1 mixers: detected as mamba1, S0 changes the logits, prefill +
    decode equals one full forward (S0 entered once), and a left-padded row equals the prompt alone."""
    from transformers import DynamicCache

    model, dtype = other_mamba1_model(name)
    assert {r.kind for r in recurrent_layers(model)} == {"mamba1"}
    adapter = random_adapter(model, scale=3.0, alpha=1.0, dtype=dtype)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240]])
    cache_arg = "cache" if name == "falcon_mamba" else "past_key_values"
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    with adapter.active(), torch.no_grad():
        full = model(input_ids=ids).logits
        cache = DynamicCache(config=model.config)
        parts = [model(input_ids=ids[:, :5], use_cache=True, **{cache_arg: cache}).logits]
        for t in range(5, ids.shape[1]):
            parts.append(model(input_ids=ids[:, t : t + 1], use_cache=True, **{cache_arg: cache}).logits)
        tok = tiny_tokenizer()
        padded = model(**tok(["ab", "a longer prompt"], return_tensors="pt", padding=True)).logits[0, -1]
        alone = model(**tok(["ab"], return_tensors="pt")).logits[0, -1]
    assert rel_err(plain, full) > 1e-3
    assert rel_err(torch.cat(parts, dim=1), full) < 1e-5
    assert rel_err(padded, alone) < 1e-5


def test_kernel_gets_delta_in_the_input_dtype_in_half_precision():
    """mamba-ssm's CUDA scan refuses a delta whose dtype differs from u's: with pads to zero, the dispatcher
    hands the kernel its discretised dt in the input's dtype (bf16 here), not in float32."""
    import transformers.models.mamba.modeling_mamba as mm

    model = build_model("mamba", TINY_ARCH["mamba"], dtype=torch.bfloat16)
    kernel = inj.pytorch_kernel(mm, "mamba_selective_scan")
    seen: list[tuple[torch.dtype, torch.dtype]] = []

    def like_mamba_ssm(u, delta, *args, **kwargs):
        seen.append((u.dtype, delta.dtype))
        return kernel(u, delta, *args, **kwargs)

    tok = tiny_tokenizer()
    enc = tok(["ab", "a longer prompt"], return_tensors="pt", padding=True)
    adapter = S0Adapter(model, alpha=0.5)
    with inj.override_kernel("mamba_selective_scan", like_mamba_ssm), adapter.active(), torch.no_grad():
        model(**enc)
    assert seen == [(torch.bfloat16, torch.bfloat16)] * 3
