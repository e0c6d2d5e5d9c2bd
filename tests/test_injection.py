"""Injection exactness: a per-token reference recurrence (paper Eq. 1 and Eq. 2) against the library mixers with
S0 injected; injection happens once; decode is unchanged; padding is handled; gradients are right.

Float64 models throughout. transformers' recurrent kernels compute in float32 internally, so "exact" here means
float32 agreement (relative error a few 1e-7); the fp64 reference kernels below are exact to 1e-12.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from s0.adapters import S0Adapter, StateOffsetAdapter
from s0.adapters import injection as inj
from s0.adapters.kinds import recurrent_layers
from s0.models import TINY_ARCH, build_model, tiny_tokenizer

inj.install_known()  # on a machine with fla / mamba-ssm, CPU tensors must not reach their CUDA kernels

FAMILIES = ["qwen3_5", "falcon_h1"]
RTOL = 1e-6  # relative to the largest reference value; measured 1e-7 .. 4e-7 (float32 kernels)


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.cache
def tiny(family: str, init: float = 0.02, rms_norm: bool = False):
    """Tiny float64 model. init=0.3 makes greedy tokens depend on the recurrent state (with the default 0.02 a
    tied-embedding tiny model just repeats its last token). rms_norm: FalconH1's gated-RMSNorm Mamba variant (the
    7B's setting) instead of the tiny default SiLU gate."""
    arch = {**TINY_ARCH[family], "initializer_range": init}
    if rms_norm:
        arch["mamba_rms_norm"] = True
    return build_model(family, arch, dtype=torch.float64)


def random_s0(
    model, scale: float = 1.0, seed: int = 0, cls=S0Adapter, dtype=torch.float64, **kw
) -> S0Adapter:
    """An adapter with N(0, scale^2) states (float64 unless `dtype`), as if trained; the kind tests share it."""
    adapter = cls(model, dtype=dtype, **kw)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return adapter


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------ reference recurrences (Eq. 1, Eq. 2)
def gdn_recurrence(q, k, v, g, beta, s0, offset=None):
    """Eq. 1 token by token. q, k (T, H, K) already normalised; v (T, H, V); g, beta (T, H); s0 (H, K, V).
    The paper's S (V x K) is stored transposed, (K x V): S_t = a_t (I - b_t k k^T) S_{t-1} + b_t k v^T.
    `offset` (state-offset, Sec 5.5): the readout uses S_t + dS, the recurrence does not."""
    read = torch.zeros_like(s0) if offset is None else offset
    eye = torch.eye(k.shape[-1], dtype=s0.dtype)
    s, outs = s0, []
    for t in range(q.shape[0]):
        a_t, b_t = g[t].exp()[:, None, None], beta[t][:, None, None]  # (H, 1, 1)
        kk = k[t][:, :, None] * k[t][:, None, :]  # (H, K, K)
        s = a_t * (eye - b_t * kk) @ s + b_t * k[t][:, :, None] * v[t][:, None, :]
        outs.append(torch.einsum("hkv,hk->hv", s + read, q[t]))  # read after the update, as the kernels do
    return torch.stack(outs), s


def mamba2_recurrence(x, dt, A, B, C, D, s0, offset=None):
    """Eq. 2 token by token: S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T; y_t = (S_t + dS) C_t + D x_t.
    x (T, H, P); dt (T, H) after softplus; A, D (H,); B, C (T, H, N); s0 and offset dS (H, P, N)."""
    read = torch.zeros_like(s0) if offset is None else offset
    s, outs = s0, []
    for t in range(x.shape[0]):
        s = (dt[t] * A).exp()[:, None, None] * s + dt[t][:, None, None] * x[t][:, :, None] * B[t][:, None, :]
        outs.append(torch.einsum("hpn,hn->hp", s + read, C[t]) + D[:, None] * x[t])
    return torch.stack(outs), s


def _causal_conv(x, conv):  # x (T, C) -> (T, C), depthwise causal conv + SiLU
    w = conv.weight  # (C, 1, width)
    y = F.conv1d(F.pad(x.mT[None], (w.shape[-1] - 1, 0)), w, conv.bias, groups=w.shape[0])
    return F.silu(y[0].T)


def ref_gdn_mixer(mod, h, s0, offset=None):
    """Qwen3.5 GatedDeltaNet on one unpadded sequence h (T, D), written from the paper, weights from `mod`."""
    T, nk, nv = h.shape[0], mod.num_k_heads, mod.num_v_heads
    qkv = _causal_conv(mod.in_proj_qkv(h), mod.conv1d)
    q, k, v = qkv.split([mod.key_dim, mod.key_dim, mod.value_dim], dim=-1)
    q, k = (x.view(T, nk, -1).repeat_interleave(nv // nk, dim=1) for x in (q, k))
    q, k = (x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6) for x in (q, k))
    q = q * q.shape[-1] ** -0.5
    beta = mod.in_proj_b(h).sigmoid()
    g = -mod.A_log.exp() * F.softplus(mod.in_proj_a(h) + mod.dt_bias)
    o, _ = gdn_recurrence(q, k, v.view(T, nv, -1), g, beta, s0, offset)
    o = mod.norm(o.reshape(-1, mod.head_v_dim), mod.in_proj_z(h).reshape(-1, mod.head_v_dim))
    return mod.out_proj(o.reshape(T, -1))


def ref_mamba2_mixer(mod, h, s0, offset=None):
    """FalconH1 Mamba-2 mixer on one unpadded sequence h (T, D), written from the paper, weights from `mod`."""
    T, H = h.shape[0], mod.num_heads
    proj = mod.in_proj(h * mod.ssm_in_multiplier) * mod.mup_vector.view(-1)  # mup_vector is (1, 1, P)
    gate, xbc, dt = proj.split([mod.intermediate_size, mod.conv_dim, H], dim=-1)
    gn = mod.groups_time_state_size  # n_groups * d_state
    x, B, C = _causal_conv(xbc, mod.conv1d).split([mod.intermediate_size, gn, gn], dim=-1)
    B, C = (z.view(T, mod.n_groups, -1).repeat_interleave(H // mod.n_groups, dim=1) for z in (B, C))
    dt = F.softplus(dt + mod.dt_bias).clamp(*mod.time_step_limit)
    y, _ = mamba2_recurrence(x.view(T, H, -1), dt, -mod.A_log.exp(), B, C, mod.D, s0, offset)
    y = y.reshape(T, -1)
    y = mod.norm(y, gate) if mod.mamba_rms_norm else y * F.silu(gate)
    return mod.out_proj(y)


REF_MIXER = {"gdn": ref_gdn_mixer, "mamba2": ref_mamba2_mixer}


def capture_mixers(model):
    """Forward hooks recording each recurrent mixer's input hidden states and output."""
    seen, handles = {}, []
    for r in recurrent_layers(model):

        def hook(mod, args, kwargs, out, idx=r.index):
            seen[idx] = (
                kwargs.get("hidden_states", args[0] if args else None),
                kwargs.get("attention_mask"),
                out,
            )

        handles.append(r.module.register_forward_hook(hook, with_kwargs=True))
    return seen, handles


# ------------------------------------------------------------------ kernel-signature fp64 references
def ref_gdn_kernel(query, key, value, g, beta, initial_state=None, output_final_state=False,
                   use_qk_l2norm_in_kernel=False, **_):  # fmt: skip
    """Same signature as transformers' GDN kernels, in the input dtype (float64 here), token by token."""
    b, _, nk, _ = key.shape
    nv = value.shape[2]
    q, k = (x.repeat_interleave(nv // nk, dim=2) for x in (query, key))
    if use_qk_l2norm_in_kernel:
        q, k = (x * torch.rsqrt((x * x).sum(-1, keepdim=True) + 1e-6) for x in (q, k))
    q = q * q.shape[-1] ** -0.5
    s0 = initial_state if initial_state is not None else query.new_zeros(b, nv, k.shape[-1], value.shape[-1])
    outs, finals = zip(
        *(gdn_recurrence(q[i], k[i], value[i], g[i], beta[i], s0[i].to(q.dtype)) for i in range(b))
    )
    return torch.stack(outs), (torch.stack(finals) if output_final_state else None)


def ref_mamba2_kernel(hidden_states, dt, A, B, C, chunk_size=None, D=None, dt_bias=None, initial_states=None,
                      dt_softplus=False, dt_limit=(0.0, math.inf), return_final_states=False, **_):  # fmt: skip
    """Same signature as transformers' mamba2_chunk_scan, in float64, token by token."""
    b, _, H, P = hidden_states.shape
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    dt = dt.clamp(*dt_limit)
    B, C = (z.repeat_interleave(H // z.shape[2], dim=2) for z in (B, C))
    s0 = initial_states if initial_states is not None else hidden_states.new_zeros(b, H, P, B.shape[-1])
    Dv = D if D is not None else hidden_states.new_zeros(H)
    outs, finals = zip(
        *(mamba2_recurrence(hidden_states[i], dt[i], A, B[i], C[i], Dv, s0[i]) for i in range(b))
    )
    y = torch.stack(outs)
    return (y, torch.stack(finals)) if return_final_states else y


# ------------------------------------------------------------------ tests
VARIANTS = [("qwen3_5", False), ("falcon_h1", False), ("falcon_h1", True)]


@pytest.mark.parametrize(("family", "rms_norm"), VARIANTS)
@pytest.mark.parametrize("positions", [None, [0, 2]])
@pytest.mark.parametrize("cls", [S0Adapter, StateOffsetAdapter])
def test_layer_outputs_match_reference_recurrence(family, rms_norm, positions, cls):
    """Every recurrent layer's output, at every position, equals Eq. 1 / Eq. 2 run token by token from
    alpha * S0 (selected layers) or 0 (the others); for state-offset, from 0 with the readout on S_t + alpha dS."""
    model = tiny(family, rms_norm=rms_norm)
    adapter = random_s0(model, alpha=0.5, layers=positions, cls=cls)
    selected = {r.index for r in adapter.layers}
    ids = torch.tensor(
        [[5, 77, 130, 9, 201, 18, 66, 240, 3, 100, 12]]
    )  # 11 tokens: crosses Falcon's chunk of 8
    seen, handles = capture_mixers(model)
    try:
        with adapter.active(), torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    for r in recurrent_layers(model):
        h_in, _, out = seen[r.index]
        zero = torch.zeros(r.state_shape, dtype=torch.float64)
        state = 0.5 * adapter.states[str(r.index)] if r.index in selected else zero
        s0, offset = (zero, state) if cls is StateOffsetAdapter else (state, None)
        with torch.no_grad():
            ref = REF_MIXER[r.kind](r.module, h_in[0], s0, offset)
        assert rel_err(out[0], ref) < RTOL, (r.index, rel_err(out[0], ref))
        if r.index in selected:  # and the state made a difference: not a silent no-op
            with torch.no_grad():
                ref0 = REF_MIXER[r.kind](r.module, h_in[0], zero)
            assert rel_err(ref0, ref) > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_padded_rows_match_reference_at_every_real_position(family):
    """Layer-level batch invariance: a left-padded row's mixer output equals the unpadded reference."""
    model = tiny(family)
    adapter = random_s0(model, alpha=1.0)
    tok = tiny_tokenizer()
    enc = tok(["ab", "a longer prompt here"], return_tensors="pt", padding=True)
    seen, handles = capture_mixers(model)
    try:
        with adapter.active(), torch.no_grad():
            model(**enc)
    finally:
        for h in handles:
            h.remove()
    n_real = int(enc.attention_mask[0].sum())
    for r in recurrent_layers(model):
        h_in, mask, out = seen[r.index]
        assert mask is not None and mask.shape == enc.attention_mask.shape
        with torch.no_grad():
            ref = REF_MIXER[r.kind](r.module, h_in[0, -n_real:], adapter.states[str(r.index)])
        assert rel_err(out[0, -n_real:], ref) < RTOL


@pytest.mark.parametrize(("family", "rms_norm"), VARIANTS)
@pytest.mark.parametrize("cls", [S0Adapter, StateOffsetAdapter])
def test_injected_once_decode_and_chunked_prefill_equal_full_forward(family, rms_norm, cls):
    """Prefill in two segments, then one-token decode steps, all through the cache, equal one full forward: the
    state enters once (injecting again at the second segment or at a decode step would change the logits)."""
    from transformers import DynamicCache

    model = tiny(family, rms_norm=rms_norm)
    # Mamba-2's decay forgets fast in the random tiny model: a larger state keeps its effect measurable.
    adapter = random_s0(model, scale=1.0 if family == "qwen3_5" else 30.0, alpha=0.5, cls=cls)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240, 3, 100, 12, 44, 91]])
    with adapter.active(), torch.no_grad():
        full = model(input_ids=ids).logits
        cache = DynamicCache(config=model.config)
        parts = [model(input_ids=ids[:, :6], past_key_values=cache, use_cache=True).logits]
        parts.append(model(input_ids=ids[:, 6:9], past_key_values=cache, use_cache=True).logits)  # chunk 2
        for t in range(9, ids.shape[1]):  # one-token decode steps
            parts.append(model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    stepped = torch.cat(parts, dim=1)
    assert rel_err(stepped, full) < RTOL
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    assert rel_err(plain, full) > 1e-4  # S0 really changed the outputs


class OpTrace(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def decode_step_ops(model, ids) -> list[str]:
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        with OpTrace() as trace:
            model(input_ids=nxt, past_key_values=cache, use_cache=True)
    return trace.ops


@pytest.mark.parametrize("family", FAMILIES)
def test_decode_step_runs_the_same_ops_with_s0_and_more_with_offset(family):
    """Zero overhead: a decode step with S0 active executes exactly the base model's aten ops; state-offset's
    per-step readout adds ops."""
    model = tiny(family)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18]])
    s0 = random_s0(model, alpha=0.5)
    base_ops = decode_step_ops(model, ids)
    with s0.active():
        s0_ops = decode_step_ops(model, ids)
    assert s0_ops == base_ops
    offset = StateOffsetAdapter(model, alpha=0.5)
    with offset.active():
        off_ops = decode_step_ops(model, ids)
    assert len(off_ops) > len(base_ops)


def greedy(model, tok, prompts, n_new=6):
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[:, enc.input_ids.shape[1] :].tolist()


DECODE_KERNEL = {"qwen3_5": "torch_recurrent_gated_delta_rule", "falcon_h1": "mamba2_selective_state_update"}


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_decode_steps_skip_the_s0_hook(family):
    """Zero overhead in `generate` on the installed transformers: every one-token cached decode step of an S0
    layer runs with no injection active. The skip reads the mixer's cache argument, renamed in 5.24
    (cache_params -> cache); read under a stale name it is None, nothing is skipped and this test fails."""
    import sys

    model, tok = tiny(family), tiny_tokenizer()
    layer = recurrent_layers(model)[0]
    name = DECODE_KERNEL[family]
    kernel = inj.pytorch_kernel(sys.modules[type(layer.module).__module__], name)
    skipped: list[bool] = []

    def spy(*args, **kwargs):
        skipped.append(inj._CURRENT.get() is None)
        return kernel(*args, **kwargs)

    n_new = 5
    with inj.override_kernel(name, spy), random_s0(model, alpha=0.5).active():
        greedy(model, tok, ["def f(x):", "a"], n_new=n_new)  # left-padded batch: a mask is passed too
    # the first new token comes from the prefill; each later one is one decode step in every recurrent layer
    assert len(skipped) == (n_new - 1) * len(recurrent_layers(model))
    assert all(skipped)


def test_mixer_arguments_are_read_under_the_forward_signature_names():
    """The pre-hook finds the cache under 5.23's and 5.24's names, and refuses a mixer whose names it does not
    know rather than read None."""
    from torch import nn

    class Old(nn.Module):
        def forward(self, hidden_states, cache_params=None, attention_mask=None): ...

    class New(nn.Module):
        def forward(self, hidden_states, cache=None, attention_mask=None, **kwargs): ...

    class Renamed(nn.Module):
        def forward(self, hidden_states, state_cache=None, attention_mask=None): ...

    h, c, m = torch.zeros(1, 1, 2), object(), torch.ones(1, 1)
    assert inj._mixer_args(Old()).read((h, c), {"attention_mask": m}) == (h, c, m)
    assert inj._mixer_args(New()).read((h,), {"cache": c}) == (h, c, None)
    with pytest.raises(inj.InjectionError, match="state_cache"):
        inj._mixer_args(Renamed())


PROMPTS = [
    "a",
    "def f(x):",
    "hello world",
    "12+34=",
    "The quick brown fox",
    "x",
    "print('hi')",
    "user: solve it",
]


@pytest.mark.parametrize(("family", "scale"), [("qwen3_5", 1.0), ("falcon_h1", 10.0)])
def test_batched_generation_equals_one_at_a_time(family, scale):
    """8 prompts of different lengths, left-padded, S0 active with alpha != 0: same greedy tokens batched and one
    by one. The naive injection (pads decay the state) fails the same check; with S0 = 0 both pass (the bug hides
    in the baseline)."""
    model, tok = tiny(family, init=0.3), tiny_tokenizer()
    singles_base = [greedy(model, tok, [p])[0] for p in PROMPTS]
    assert greedy(model, tok, PROMPTS) == singles_base  # baseline: generate's position ids come from the mask
    adapter = random_s0(model, scale=scale, alpha=0.5)
    with adapter.active():
        singles = [greedy(model, tok, [p])[0] for p in PROMPTS]
        batched = greedy(model, tok, PROMPTS)
    assert singles != singles_base  # S0 changes the generations
    assert batched == singles
    naive = random_s0(model, scale=scale, alpha=0.5, fix_padding=False)
    with naive.active():
        assert greedy(model, tok, PROMPTS) != singles


@pytest.mark.parametrize("family", FAMILIES)
def test_gradcheck_states_through_whole_model_fp64_reference_kernels(family):
    """gradcheck on the state tensors through the whole tiny model, with the kernels swapped for the fp64
    per-token references above (transformers' kernels run in float32, below gradcheck's resolution); layers 0 and
    2 selected, so the others must get no gradient."""
    model = tiny(family)
    adapter = random_s0(model, scale=0.3, alpha=0.7, alpha_mode="train_and_inference", layers=[0, 2])
    ids = torch.tensor([[5, 77, 130, 9, 201]])
    weights = torch.randn(
        1, 5, TINY_ARCH[family]["vocab_size"], generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    names = list(adapter.states.keys())
    kernel = {
        "qwen3_5": ("torch_chunk_gated_delta_rule", ref_gdn_kernel),
        "falcon_h1": ("mamba2_chunk_scan", ref_mamba2_kernel),
    }[family]
    real_states = adapter.states

    def f(*states):
        adapter.states = dict(zip(names, states))
        try:
            return (model(input_ids=ids).logits * weights).sum()
        finally:
            adapter.states = real_states

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in adapter.parameters())
    # Qwen3.5's RMSNorms and decay gate compute in float32 even in a float64 model, so its finite differences
    # need a larger step (measured: eps 1e-3 agrees to 7e-5 relative, eps 1e-6 only to 1e-2). FalconH1 is float64
    # outside its kernels, so it takes gradcheck's defaults.
    tol = dict(eps=1e-3, atol=1e-4, rtol=1e-3) if family == "qwen3_5" else {}
    with inj.override_kernel(*kernel), adapter.active(), adapter.train_mode():
        assert torch.autograd.gradcheck(f, inputs, fast_mode=True, **tol)
        # and transformers' own float32 kernel gives the same gradient to float32 accuracy
        ref_grads = torch.autograd.grad(f(*inputs), inputs)
    with adapter.active(), adapter.train_mode():
        lib_grads = torch.autograd.grad(f(*inputs), inputs)
    for a, b in zip(lib_grads, ref_grads):
        assert b.abs().max() > 0
        assert rel_err(a, b) < 1e-5


@pytest.mark.skipif(
    inj._PACKAGE_PRESENT["gdn"], reason="with fla installed the native kernel cannot run on CPU"
)
def test_dispatchers_are_pass_through_without_an_active_adapter():
    """Installed dispatchers with nothing active give bit-identical outputs; installing twice is a no-op."""
    import transformers.models.qwen3_5.modeling_qwen3_5 as mq

    model = tiny("qwen3_5")
    ids = torch.tensor([[5, 77, 130, 9, 201, 18]])
    inj.uninstall(mq)
    with torch.no_grad():
        before = model(input_ids=ids).logits
    inj.install(mq, "gdn")
    first = mq.torch_chunk_gated_delta_rule
    inj.install(mq, "gdn")
    assert mq.torch_chunk_gated_delta_rule is first
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)


def test_falcon_fused_training_path_cannot_drop_the_state(monkeypatch):
    """With mamba-ssm, FalconH1 in train mode without a cache calls a fused kernel that takes no initial state.
    Simulate it: a fused kernel that would return something; with S0 active the dispatcher declines it."""
    import transformers.models.falcon_h1.modeling_falcon_h1 as mf

    model = tiny("falcon_h1")
    adapter = random_s0(model, alpha=0.5)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18]])
    with adapter.active(), torch.no_grad():
        expected = model(input_ids=ids).logits
    inj.install(mf, "mamba2")
    calls = []

    def fake_fused(*args, **kwargs):
        calls.append(1)
        raise AssertionError("fused path must not run while S0 is active")

    monkeypatch.setattr(mf, "mamba2_split_conv1d_scan_combined", inj._mamba_fused_dispatch("x", fake_fused))
    model.train()
    try:
        with adapter.active(), torch.no_grad():
            got = model(input_ids=ids).logits
    finally:
        model.eval()
    assert not calls and torch.allclose(got, expected, rtol=0, atol=0)
