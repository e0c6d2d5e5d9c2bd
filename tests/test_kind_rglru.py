"""RG-LRU recurrence kind (s0/adapters/kinds/rglru.py) on a tiny transformers `recurrent_gemma` model: exactness
against a per-token reference written from RG-LRU's equations, padding, gradients, save/load, and decode.

    a_t = exp(-8 r_t softplus(c)),  r_t, i_t = sigmoid(block-diagonal projections of x_t)
    h_t = a_t h_{t-1} + sqrt(1 - a_t^2) (i_t x_t),   and at a reset (position 0): h_0 = a_0 S0 + i_0 x_0

transformers drops the state at a reset (a_0 -> 0) and does not normalise the reset step's input; S0 takes the
place of the state the reset drops, decayed by a_0 (with S0 = 0, the base model). Float64 models.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from s0.adapters import S0Adapter, StateOffsetAdapter, load_adapter
from s0.adapters.kinds import KINDS, recurrent_layers
from s0.models import TINY_ARCH, build_model, tiny_tokenizer
from tests.test_injection import random_s0 as random_adapter
from tests.test_injection import rel_err

pytestmark = pytest.mark.usefixtures("one_thread")
# transformers' scan accumulates in float32 (`acc_dtype`, and the cached state is float32) even in a float64
# model; the reference runs in float64, so the two agree to float32 rounding (measured ~6e-8). S0's effect on
# the compared outputs is asserted > 1e-3 in each test, far above these tolerances.
RTOL = 1e-6
LOGITS_RTOL = 1e-6
WIDTH = TINY_ARCH["recurrent_gemma"]["hidden_size"]  # lru_width defaults to hidden_size


@functools.cache
def tiny():
    return build_model("recurrent_gemma", TINY_ARCH["recurrent_gemma"], dtype=torch.float64)


def pad_positions(mask: torch.Tensor) -> torch.Tensor:
    """generate's position ids for a left-padded batch: pads and the first real token at 0 (both resets)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


# ------------------------------------------------------------------ reference (RG-LRU's equations)
def rglru_recurrence(x, a, i, s0, offset=None):
    """Token by token over one sequence starting at a reset. x, a, i (T, W); s0, offset (W,).
    The layer reads h_t + dS (state-offset); the recurrence does not see dS."""
    read = torch.zeros_like(s0) if offset is None else offset
    h, outs = None, []
    for t in range(x.shape[0]):
        if t == 0:  # reset: the incoming state is S0, decayed by a_0; the input is not normalised
            h = a[0] * s0 + i[0] * x[0]
        else:
            h = a[t] * h + torch.sqrt(1 - a[t] ** 2) * (i[t] * x[t])
        outs.append(h + read)
    return torch.stack(outs)


def ref_block(mod, h, s0, offset=None):
    """transformers' RecurrentGemmaRecurrentBlock on one unpadded sequence h (T, hidden), weights from `mod`."""
    y = F.gelu(mod.linear_y(h), approximate="tanh")
    x = mod.linear_x(h)
    w = mod.conv_1d.weight  # (W, 1, width): depthwise causal conv, no activation
    x = F.conv1d(F.pad(x.T[None], (w.shape[-1] - 1, 0)), w, mod.conv_1d.bias, groups=w.shape[0])[0].T
    lru = mod.rg_lru
    n_heads, bw = lru.num_attention_heads, lru.block_width
    xb = x.reshape(-1, n_heads, bw)  # block-diagonal gates: head k maps its bw channels with its own matrix
    i = torch.sigmoid(torch.einsum("thc,hcd->thd", xb, lru.input_gate_weight) + lru.input_gate_bias).reshape(
        x.shape
    )
    r = torch.sigmoid(torch.einsum("thc,hcd->thd", xb, lru.recurrent_gate_weight) + lru.recurrent_gate_bias)
    a = torch.exp(-8.0 * r.reshape(x.shape) * F.softplus(lru.recurrent_param))
    return mod.linear_out(rglru_recurrence(x, a, i, s0, offset) * y)


def capture(model):
    seen, handles = {}, []
    for r in recurrent_layers(model):

        def hook(mod, args, kwargs, out, idx=r.index):
            seen[idx] = kwargs.get("hidden_states", args[0] if args else None), out[0]

        handles.append(r.module.register_forward_hook(hook, with_kwargs=True))
    return seen, handles


def block_outputs(model, adapter, **inputs):
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
    """The two recurrent blocks of the tiny model (layers 0, 1; layer 2 is attention) are rglru layers with state
    (lru_width,); no kernel names (transformers' PyTorch scan, patched in the kind file)."""
    layers = recurrent_layers(tiny())
    assert [(r.index, r.kind, r.state_shape) for r in layers] == [
        (0, "rglru", (WIDTH,)),
        (1, "rglru", (WIDTH,)),
    ]
    assert KINDS["rglru"].kernels == ()
    assert "reset" in KINDS["rglru"].kernel_note
    assert S0Adapter(tiny()).num_trainable() == 2 * WIDTH


@pytest.mark.parametrize("positions", [None, [1]])
@pytest.mark.parametrize("cls", [S0Adapter, StateOffsetAdapter])
def test_layer_outputs_match_reference_recurrence(positions, cls):
    """Each block's output at every position equals the recurrence run from alpha * S0 (selected layers) or 0;
    for state-offset, from 0 with the readout h_t + alpha dS."""
    model = tiny()
    adapter = random_adapter(model, alpha=0.5, layers=positions, cls=cls)
    selected = {r.index for r in adapter.layers}
    seen = block_outputs(
        model, adapter, input_ids=torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240, 3, 100, 12]])
    )
    assert set(seen) == {0, 1}
    for r in recurrent_layers(model):
        h_in, out = seen[r.index]
        zero = torch.zeros(r.state_shape, dtype=torch.float64)
        state = 0.5 * adapter.states[str(r.index)] if r.index in selected else zero
        s0, offset = (zero, state) if cls is StateOffsetAdapter else (state, None)
        with torch.no_grad():
            ref = ref_block(r.module, h_in[0], s0, offset)
            ref0 = ref_block(r.module, h_in[0], zero)
        assert rel_err(out[0], ref) < RTOL, (r.index, rel_err(out[0], ref))
        if r.index in selected:  # the state made a difference: not a silent no-op
            assert rel_err(ref0, ref) > 1e-3


def test_left_padded_rows_match_reference_with_generate_position_ids():
    """Pads never reach the state: with generate's position ids (pads and the first real token are resets) a
    left-padded row equals the unpadded reference from S0, block by block, and its logits equal the prompt
    alone. With position ids counted from column 0 (what a plain forward does) the same check fails: padding
    in recurrent_gemma is carried by position ids, not by the attention mask."""
    model, tok = tiny(), tiny_tokenizer()
    enc = tok(["ab", "a longer prompt here"], return_tensors="pt", padding=True)
    n_real = int(enc.attention_mask[0].sum())
    assert n_real < enc.input_ids.shape[1]
    adapter = random_adapter(model, alpha=1.0)
    for positions, ok in ((pad_positions(enc.attention_mask), True), (None, False)):
        seen = block_outputs(model, adapter, **enc, position_ids=positions)
        errs = []
        for r in recurrent_layers(model):
            h_in, out = seen[r.index]
            with torch.no_grad():
                ref = ref_block(r.module, h_in[0, -n_real:], adapter.states[str(r.index)])
                ref0 = ref_block(r.module, h_in[0, -n_real:], torch.zeros(WIDTH, dtype=torch.float64))
            errs.append(rel_err(out[0, -n_real:], ref))
            assert rel_err(ref0, ref) > 1e-3  # S0 matters in this comparison
        assert (max(errs) < RTOL) == ok, (positions, errs)
    with adapter.active(), torch.no_grad():
        padded = model(**enc, position_ids=pad_positions(enc.attention_mask)).logits[0, -n_real:]
        alone = model(**tok(["ab"], return_tensors="pt")).logits[0]
    assert rel_err(padded, alone) < LOGITS_RTOL


def greedy(model, tok, prompts, n_new=6):
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[:, enc.input_ids.shape[1] :].tolist()


def test_batched_generation_equals_one_at_a_time():
    """Left-padded batch with S0 active: the same greedy tokens as one prompt at a time, and S0 changes them."""
    model, tok = tiny(), tiny_tokenizer()
    prompts = ["a", "def f(x):", "hello world", "12+34="]
    base = [greedy(model, tok, [p])[0] for p in prompts]
    adapter = random_adapter(model, scale=30.0, alpha=1.0)
    with adapter.active():
        singles = [greedy(model, tok, [p])[0] for p in prompts]
        batched = greedy(model, tok, prompts)
    assert singles != base
    assert batched == singles


def test_gradcheck_float64(monkeypatch):
    """d(block output)/d(S0) through transformers' recurrent block and scan, checked against finite differences
    for each layer; the whole model's gradient reaches every layer's S0. The blocks are called directly (through
    the adapter's hooks): the model's RMSNorms compute in float32, below finite differences' resolution."""
    model = tiny()
    adapter = random_adapter(model, alpha=0.7)
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(1, 5, WIDTH, generator=gen, dtype=torch.float64)
    weights = torch.randn(1, 5, WIDTH, generator=gen, dtype=torch.float64)
    positions = torch.arange(5)[None]
    # The scan accumulates in float32 by default: run it in float64 here (the kind's wrapper, S0 entry
    # included, is what runs; only its accumulation dtype changes).
    lru = type(recurrent_layers(model)[0].module.rg_lru)
    scan = lru._rnn_scan

    def scan64(self, **kw):
        return scan(self, **kw, acc_dtype=torch.float64)

    scan64._s0_original = (
        scan._s0_original
    )  # still counts as patched: recurrent_layers must not wrap it again
    monkeypatch.setattr(lru, "_rnn_scan", scan64)
    real = adapter.states
    with adapter.active(), adapter.train_mode():
        for r in recurrent_layers(model):
            name = str(r.index)

            def f(state, r=r, name=name):
                adapter.states = {**real, name: state}
                try:
                    out = r.module(h, position_ids=positions, attention_mask=None, use_cache=False)[0]
                    return (out * weights).sum()
                finally:
                    adapter.states = real

            state = real[name].detach().clone().requires_grad_(True)
            assert torch.autograd.gradcheck(f, (state,), eps=1e-6, atol=1e-8, rtol=1e-6)
            assert f(state).grad_fn is not None
        loss = model(input_ids=torch.tensor([[5, 77, 130, 9, 201]]), use_cache=False).logits.sum()
        grads = torch.autograd.grad(loss, list(adapter.parameters()))
    assert len(grads) == 2 and all(g.abs().max() > 0 for g in grads)


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
    fresh = build_model("recurrent_gemma", TINY_ARCH["recurrent_gemma"], dtype=torch.float64)
    again = load_adapter(tmp_path / "a", fresh)
    assert again.saved_meta["layer_kinds"] == ["rglru"] * 2
    assert again.saved_meta["state_shapes"] == {f"s0.{i}": [WIDTH] for i in range(2)}
    for k, v in adapter.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
    with again.active(), torch.no_grad():
        after = fresh(input_ids=ids).logits
    assert torch.equal(before, after)


def counting_adapter(model, cls=S0Adapter, **kw):
    """An adapter whose injected() calls are counted per layer (the scan calls it once per injection)."""
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
    """A second multi-token segment into a filled cache continues the module's state (its positions do not start
    at 0, so transformers does not reset); S0 does not enter there: once per sequence, before the first token.
    The two segments equal one forward."""
    from transformers import DynamicCache

    model = tiny()
    adapter, calls = counting_adapter(model, alpha=0.5)
    ids = torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240]])
    with adapter.active(), torch.no_grad():
        cache = DynamicCache(config=model.config)
        first = model(input_ids=ids[:, :5], cache=cache, use_cache=True).logits
        assert len(calls) == 2
        second = model(input_ids=ids[:, 5:], cache=cache, use_cache=True).logits
        assert len(calls) == 2
        full = model(input_ids=ids).logits
    # transformers restarts the conv1d from zeros on a second multi-token segment (its prefill ignores the conv
    # cache), so only the first segment is compared exactly; the second must at least stay finite.
    assert rel_err(first, full[:, :5]) < LOGITS_RTOL
    with torch.no_grad():
        assert rel_err(model(input_ids=ids[:, :5]).logits, first) > 1e-4  # S0 entered in the first segment
    assert torch.isfinite(second).all()


def test_decode_step_runs_the_same_ops_with_s0():
    """Zero overhead: a decode step with S0 active executes exactly the base model's aten ops (and its output
    differs from the base model's: S0 reaches it through the cached state)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import DynamicCache

    class Trace(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    def step(model):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=torch.tensor([[5, 77, 130, 9]]), cache=cache, use_cache=True)
            with Trace() as trace:
                logits = model(input_ids=torch.tensor([[42]]), cache=cache, use_cache=True).logits
        return trace.ops, logits

    model = tiny()
    base_ops, base_logits = step(model)
    with random_adapter(model, scale=3.0, alpha=0.5).active():
        ops, logits = step(model)
    assert ops == base_ops
    assert rel_err(logits, base_logits) > 1e-4
    with random_adapter(model, alpha=0.5, cls=StateOffsetAdapter).active():
        assert len(step(model)[0]) > len(base_ops)


def test_no_adapter_leaves_the_model_unchanged():
    """The class patches are pass-throughs with no adapter active: logits equal transformers' unpatched code."""
    import transformers.models.recurrent_gemma.modeling_recurrent_gemma as rg

    model = tiny()
    recurrent_layers(model)  # applies the patches
    ids = torch.tensor([[5, 77, 130, 9, 201, 18]])
    with torch.no_grad():
        patched = model(input_ids=ids).logits
    block, lru = rg.RecurrentGemmaRecurrentBlock, rg.RecurrentGemmaRglru
    saved = block.forward, lru._rnn_scan
    block.forward, lru._rnn_scan = saved[0]._s0_original, saved[1]._s0_original
    try:
        with torch.no_grad():
            plain = model(input_ids=ids).logits
    finally:
        block.forward, lru._rnn_scan = saved
    assert torch.equal(patched, plain)
