"""Kimi Delta Attention recurrence kind (s0/adapters/kinds/kda.py) on a tiny transformers `kimi_linear` model:
exactness against a per-token reference written from KDA's equations, padding, gradients, save/load, decode.

    S_t = diag(exp(g_t)) S_{t-1}                    g_t = -exp(A_log) softplus(f_b f_a h_t + dt_bias), per channel
    S_t = S_t + beta_t k_t (v_t - S_t^T k_t)^T       beta_t = sigmoid(b_proj h_t)
    o_t = S_t^T q_t                                  q, k L2-normalised, q scaled by K^-1/2
    y_t = o_proj(RMSNorm(o_t) * sigmoid(g_b g_a h_t))

Float64 models, but transformers' KDA kernels, forget gate and gated norm compute in float32 (as fla does), so
exactness is to float32 accuracy; gradcheck swaps the kernel for a float64 per-token one of the same signature.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from s0.adapters import S0Adapter, StateOffsetAdapter, load_adapter
from s0.adapters import injection as inj
from s0.adapters.kinds import KINDS, recurrent_layers
from s0.models import TINY_ARCH, build_model, n_recurrent_layers, tiny_tokenizer
from tests.test_injection import random_s0 as random_adapter
from tests.test_injection import rel_err

inj.install_known()  # on a machine with fla, CPU tensors must not reach its Triton kernels

pytestmark = pytest.mark.usefixtures("one_thread")
ARCH = TINY_ARCH["kimi_linear"]
RTOL = 1e-5  # mixer outputs against the float64 reference; float32 kernels (measured 8e-8 .. 8e-7)
LOGITS_RTOL = 1e-5  # the cache keeps the state in float32 (`.to(torch.float32)` in the mixer); measured 3e-7


@functools.cache
def tiny(init: float = 0.1):
    return build_model("kimi_linear", {**ARCH, "initializer_range": init}, dtype=torch.float64)


# ------------------------------------------------------------------ reference (KDA's equations)
def kda_recurrence(q, k, v, g, beta, s0, offset=None):
    """Token by token, one sequence. q, k (T, H, K) normalised and q scaled; v (T, H, V); g (T, H, K) log-decay;
    beta (T, H); s0, offset (H, K, V). State-offset reads S_t + dS; the recurrence does not see dS."""
    read = torch.zeros_like(s0) if offset is None else offset
    S, outs = s0, []
    for t in range(q.shape[0]):
        S = torch.exp(g[t])[..., None] * S  # fine-grained: one decay per key channel
        err = v[t] - torch.einsum("hk,hkv->hv", k[t], S)
        S = S + torch.einsum("hk,hv->hkv", k[t], beta[t][:, None] * err)
        outs.append(torch.einsum("hk,hkv->hv", q[t], S + read))
    return torch.stack(outs), S


def l2(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)


def ref_kda_kernel(query, key, value, g, beta, chunk_size=None, initial_state=None, output_final_state=False,
                   use_qk_l2norm_in_kernel=False, **_):  # fmt: skip
    """Same signature as transformers' chunk_kimi_delta_attention, in the input dtype (float64), token by token."""
    dtype = query.dtype
    q, k = (l2(x) if use_qk_l2norm_in_kernel else x for x in (query, key))
    q = q * q.shape[-1] ** -0.5
    b, _, h, kd = key.shape
    s0 = initial_state if initial_state is not None else query.new_zeros(b, h, kd, value.shape[-1])
    outs, finals = zip(
        *(
            kda_recurrence(q[i], k[i], value[i], g[i].to(dtype), beta[i].to(dtype), s0[i].to(dtype))
            for i in range(b)
        )
    )
    return torch.stack(outs), (torch.stack(finals) if output_final_state else None)


def ref_mixer(mod, h, s0, offset=None):
    """transformers' KimiLinearDeltaAttention on one unpadded sequence h (T, hidden), from the equations."""
    T, H, K = h.shape[0], mod.num_heads, mod.head_dim
    qkv = torch.cat([mod.q_proj(h), mod.k_proj(h), mod.v_proj(h)], dim=-1)
    w = mod.conv1d.weight  # (3 H K, 1, width): depthwise causal conv, no bias, then SiLU
    qkv = F.silu(F.conv1d(F.pad(qkv.T[None], (w.shape[-1] - 1, 0)), w, groups=w.shape[0])[0].T)
    q, k, v = (x.reshape(T, H, K) for x in qkv.split(H * K, dim=-1))
    fg = mod.forget_gate
    g = -torch.exp(fg.A_log.reshape(H, 1)) * F.softplus(fg.f_b_proj(fg.f_a_proj(h)) + fg.dt_bias).reshape(
        T, H, K
    )
    beta = torch.sigmoid(mod.b_proj(h))
    o, _ = kda_recurrence(l2(q) * K**-0.5, l2(k), v, g, beta, s0, offset)
    gate = mod.g_b_proj(mod.g_a_proj(h)).reshape(T, H, K)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + mod.o_norm.variance_epsilon) * mod.o_norm.weight
    return mod.o_proj((o * torch.sigmoid(gate)).reshape(T, H * K))


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
    """The three KDA layers of the tiny model (layer 2 is MLA attention) have state (heads, K, V) = (2, 16, 16)."""
    layers = recurrent_layers(tiny())
    assert [(r.index, r.kind, r.state_shape) for r in layers] == [(i, "kda", (2, 16, 16)) for i in (0, 1, 3)]
    assert set(KINDS["kda"].kernels) == {"chunk_kimi_delta_attention", "recurrent_kimi_delta_attention"}
    assert n_recurrent_layers("kimi_linear", ARCH) == 3
    assert S0Adapter(tiny()).num_trainable() == 3 * 2 * 16 * 16


@pytest.mark.parametrize("positions", [None, [0, 2]])
@pytest.mark.parametrize("cls", [S0Adapter, StateOffsetAdapter])
def test_layer_outputs_match_reference_recurrence(positions, cls):
    """Each layer's output at every position equals the recurrence run from alpha * S0 (selected layers) or 0;
    for state-offset, from 0 with the readout on S_t + alpha dS."""
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
    """Pads are identity steps: a left-padded row equals the unpadded reference from S0. Without the fix each pad
    decays S0 by exp(-exp(A_log) softplus(dt_bias)) per channel, and the same check fails."""
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


def rms_norm_fp64(self, hidden_states, gate=None):
    """KimiLinear's RMSNorm and gated RMSNorm, computed in the input dtype instead of float32."""
    out = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
    out = self.weight * out
    return out if gate is None else out * torch.sigmoid(gate)


def forget_gate_fp64(self, hidden_states):
    """KimiLinearForgetGate (per-channel log-decay), computed in the input dtype instead of float32."""
    g = self.f_b_proj(self.f_a_proj(hidden_states)) + self.dt_bias
    return -torch.exp(self.A_log) * F.softplus(g).view(*hidden_states.shape[:2], -1, self.head_dim)


def test_gradcheck_states_through_whole_model_fp64(monkeypatch):
    """gradcheck on the states of layers 0 and 3 (positions 0 and 2) through the whole tiny model, the chunk kernel
    swapped for the float64 per-token reference, and the RMSNorms and forget gate (float32 in transformers even in a
    float64 model; layer 0's S0 reaches layer 3's gate through the hidden state) for float64 ones: float32 rounding
    is below gradcheck's resolution (measured: max |numeric - analytic| 1.5e-2 with them in float32).
    transformers' own float32 kernel, norms and gate then give the same gradient to float32 accuracy."""
    import transformers.models.kimi_linear.modeling_kimi_linear as mk

    model = tiny()
    adapter = random_adapter(model, scale=0.3, alpha=0.7, alpha_mode="train_and_inference", layers=[0, 2])
    ids = torch.tensor([[5, 77, 130, 9, 201]])
    weights = torch.randn(
        1, 5, ARCH["hidden_size"], generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    names, real = list(adapter.states.keys()), adapter.states

    def f(*states):
        adapter.states = dict(zip(names, states))
        try:
            return (model.model(input_ids=ids).last_hidden_state * weights).sum()
        finally:
            adapter.states = real

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in adapter.parameters())
    with monkeypatch.context() as patch:
        patch.setattr(mk.KimiLinearRMSNorm, "forward", rms_norm_fp64)
        patch.setattr(mk.KimiLinearRMSNormGated, "forward", rms_norm_fp64)
        patch.setattr(mk.KimiLinearForgetGate, "forward", forget_gate_fp64)
        with (
            inj.override_kernel("chunk_kimi_delta_attention", ref_kda_kernel),
            adapter.active(),
            adapter.train_mode(),
        ):
            assert torch.autograd.gradcheck(f, inputs, fast_mode=True)
            ref_grads = torch.autograd.grad(f(*inputs), inputs)
    with adapter.active(), adapter.train_mode():
        lib_grads = torch.autograd.grad(f(*inputs), inputs)
    for a, b in zip(lib_grads, ref_grads):
        assert b.abs().max() > 0
        assert rel_err(a, b) < 1e-5


def test_save_load_round_trip(tmp_path):
    """The adapter's safetensors format: same tensors, same kinds in the sidecar, same logits after loading."""
    model = tiny()
    adapter = random_adapter(model, alpha=0.5)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    with adapter.active(), torch.no_grad():
        before = model(input_ids=ids).logits
    assert rel_err(plain, before) > 1e-4
    adapter.save(tmp_path / "a")
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()
    fresh = build_model("kimi_linear", {**ARCH, "initializer_range": 0.1}, dtype=torch.float64)
    again = load_adapter(tmp_path / "a", fresh)
    assert again.saved_meta["layer_kinds"] == ["kda"] * 3
    assert again.saved_meta["state_shapes"] == {f"s0.{i}": [2, 16, 16] for i in (0, 1, 3)}
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


def test_second_multi_token_segment_continues_the_cache_without_injecting_again():
    """A multi-token segment into a filled cache starts from the cache's state (the chunk kernel's initial_state
    is not None): S0 is not read again, and the two segments equal one full forward."""
    from transformers import DynamicCache

    model = tiny()
    adapter, calls = counting_adapter(model, scale=3.0, alpha=0.5)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240]])
    with adapter.active(), torch.no_grad():
        full = model(input_ids=ids).logits
        calls.clear()
        cache = DynamicCache(config=model.config)
        first = model(input_ids=ids[:, :5], cache=cache, use_cache=True).logits
        assert len(calls) == 3
        second = model(input_ids=ids[:, 5:], cache=cache, use_cache=True).logits
    assert len(calls) == 3
    assert rel_err(torch.cat([first, second], dim=1), full) < LOGITS_RTOL


def test_generate_decode_steps_run_the_base_kernel_with_no_injection_active():
    """In `generate`, every one-token decode step of an S0 layer runs transformers' kernel with nothing active
    (the pre-hook skips), and S0 is read exactly once per layer."""
    import transformers.models.kimi_linear.modeling_kimi_linear as mk

    model, tok = tiny(), tiny_tokenizer()
    kernel = inj.pytorch_kernel(mk, "recurrent_kimi_delta_attention")
    skipped: list[bool] = []

    def spy(*args, **kwargs):
        skipped.append(inj.CURRENT.get() is None)
        return kernel(*args, **kwargs)

    adapter, calls = counting_adapter(model, alpha=0.5)
    n_new = 5
    with inj.override_kernel("recurrent_kimi_delta_attention", spy), adapter.active():
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
