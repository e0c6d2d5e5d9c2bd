"""s0.decode, the static engine, against transformers' `generate` (the reference) on the tiny models, fp32 on CPU.

Every comparison runs with an adapter active whose tensors are large random values, and checks that the adapter
moves the output away from the base model's: an engine that silently dropped the adapter would fail there.
"""

from __future__ import annotations

import pytest
import torch

from s0.adapters import build_adapter
from s0.decode import decode, unsupported_reason
from s0.generation import GenerationSpec, generate_ids, resolve_engine
from s0.models import FAMILIES, TINY_ARCH, build_model, tiny_tokenizer
from tests.test_injection import PROMPTS

pytestmark = pytest.mark.usefixtures("one_thread")

LORA_TARGETS = {"qwen3_5": ["q_proj", "v_proj", "o_proj"], "falcon_h1": ["q_proj", "v_proj", "in_proj"],
                "qwen2": ["q_proj", "v_proj", "o_proj"]}  # fmt: skip
# (family, method): S0 and state-offset on both recurrent families, LoRA unmerged and merged, prefix on the
# pure-attention control (its experiment, Sec 5.8).
CASES = [
    ("qwen3_5", "s0"),
    ("qwen3_5", "state_offset"),
    ("qwen3_5", "lora"),
    ("qwen3_5", "lora_merged"),
    ("falcon_h1", "s0"),
    ("falcon_h1", "state_offset"),
    ("falcon_h1", "lora_merged"),
    ("qwen2", "prefix"),
    ("qwen2", "lora"),
]


def tiny(family: str):
    # initializer_range 0.3: with the default 0.02 a tiny tied-embedding model just repeats its last token
    return build_model(family, {**TINY_ARCH[family], "initializer_range": 0.3}, dtype=torch.float32)


def with_adapter(family: str, method: str):
    model = tiny(family)
    name = "lora" if method.startswith("lora") else method
    adapter = build_adapter(
        name, model, alpha=0.5, target_modules=LORA_TARGETS[family], seed=0, num_virtual_tokens=4
    )
    gen = torch.Generator().manual_seed(0)
    scale = 2.0 if (family, name) == ("falcon_h1", "s0") else 0.5  # enough to move the tiny Falcon's argmax
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    if method == "lora_merged":
        adapter.merge()
    return adapter


def batch(tok, prompts=PROMPTS[:5]):
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
    return input_ids, mask


def hf_generate(model, input_ids, mask, n, eos, pad, **sampling):
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=n, pad_token_id=pad,
                         eos_token_id=eos, top_k=None, output_scores=True, return_dict_in_generate=True,
                         do_sample=bool(sampling), **sampling)  # fmt: skip
    return out.sequences[:, input_ids.shape[1] :], torch.stack(out.scores, dim=1).float()


@pytest.mark.parametrize("family,method", CASES)
def test_greedy_equals_generate_with_and_without_eos(family, method):
    tok = tiny_tokenizer()
    adapter = with_adapter(family, method)
    ids, mask = batch(tok)
    n, pad = 10, tok.pad_token_id
    with adapter.active():
        ref, _ = hf_generate(adapter.model, ids, mask, n, [-1], pad)  # -1: no EOS, every row runs n steps
        mine = decode(adapter.model, ids, mask, n, [], pad, prefill_chunk=3).tokens
        assert torch.equal(mine, ref)
        # An EOS that some rows emit mid-way: they stop and pad, the others continue
        eos = int(ref[0, 3])
        ref_eos, _ = hf_generate(adapter.model, ids, mask, n, [eos], pad)
        mine_eos = decode(adapter.model, ids, mask, n, [eos], pad, stop_check_every=2).tokens
    assert torch.equal(mine_eos, ref_eos)
    assert (ref_eos == pad).any(), "no row stopped early: the EOS branch is untested"
    with adapter.inactive():
        if method == "lora_merged":
            adapter.unmerge()
        base = decode(adapter.model, ids, mask, n, [], pad).tokens
    assert not torch.equal(base, mine), "the adapter does not change the engine's tokens: dropped?"


@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
def test_chunked_prefill_equals_one_prefill(family):
    """The recurrent state and the conv window carry across prefill chunks: chunking is exact (to fp32 noise)."""
    tok = tiny_tokenizer()
    adapter = with_adapter(family, "s0")
    ids, mask = batch(tok, PROMPTS)
    with adapter.active():
        whole = decode(adapter.model, ids, mask, 6, [], tok.pad_token_id, keep_scores=True)
        chunked = decode(adapter.model, ids, mask, 6, [], tok.pad_token_id, keep_scores=True, prefill_chunk=4)
    assert ids.shape[1] > 8, "prompts too short for several chunks"
    assert torch.equal(whole.tokens, chunked.tokens)
    torch.testing.assert_close(chunked.scores, whole.scores, atol=2e-4, rtol=1e-4)  # logits are O(10)


@pytest.mark.parametrize("family,method", [c for c in CASES if c[1] != "lora_merged"])
def test_sampled_distributions_equal_generate(family, method):
    """Teacher-forced on generate's own samples, each step's processed distribution (temperature, then top-p)
    equals generate's scores: same kept set, same probabilities."""
    tok = tiny_tokenizer()
    adapter = with_adapter(family, method)
    ids, mask = batch(tok)
    n, pad, temp, top_p = 8, tok.pad_token_id, 0.7, 0.9
    with adapter.active():
        torch.manual_seed(0)
        seq, ref = hf_generate(adapter.model, ids, mask, n, [-1], pad, temperature=temp, top_p=top_p)
        mine = decode(adapter.model, ids, mask, n, [], pad, temperature=temp, top_p=top_p, forced=seq,
                      keep_scores=True)  # fmt: skip
    assert torch.equal(mine.tokens, seq)
    assert torch.equal(torch.isinf(mine.scores), torch.isinf(ref)), "top-p kept another set of tokens"
    assert torch.isinf(ref).any() and (~torch.isinf(ref)).sum(-1).max() > 1, "top-p is vacuous here"
    torch.testing.assert_close(mine.scores.softmax(-1), ref.softmax(-1), atol=1e-5, rtol=1e-4)
    with adapter.inactive():
        base = decode(adapter.model, ids, mask, n, [], pad, temperature=temp, top_p=top_p, forced=seq,
                      keep_scores=True)  # fmt: skip
    assert (base.scores.softmax(-1) - ref.softmax(-1)).abs().max() > 1e-2, (
        "the adapter changes no distribution"
    )


def test_sampling_is_seeded_per_row_and_batch_invariant():
    tok = tiny_tokenizer()

    def until_eos(row):
        return row[: row.index(tok.eos_token_id) + 1] if tok.eos_token_id in row else row

    adapter = with_adapter("qwen3_5", "s0")
    spec = GenerationSpec(max_new_tokens=8, batch_size=4, do_sample=True, temperature=1.0, top_p=0.95, seed=3,
                          samples=2, engine="static")  # fmt: skip
    with adapter.active():
        torch.manual_seed(1)
        first = generate_ids(adapter.model, tok, PROMPTS, spec, progress=False)
        torch.manual_seed(2)  # the global RNG plays no part
        again = generate_ids(adapter.model, tok, PROMPTS, spec, progress=False)
        alone = generate_ids(adapter.model, tok, PROMPTS[:3], GenerationSpec(**{**spec.__dict__, "batch_size": 1}),
                             progress=False)  # fmt: skip
        other = generate_ids(adapter.model, tok, PROMPTS, GenerationSpec(**{**spec.__dict__, "seed": 4}),
                             progress=False)  # fmt: skip
    assert first == again
    # batch of one: a row that stops early is not padded to its batch's length
    assert [[until_eos(r) for r in rows] for rows in alone] == [
        [until_eos(r) for r in rows] for rows in first[:3]
    ], "a row's samples depend on the batch it is in"
    assert other != first, "the seed does not reach the sampler"
    assert any(rows[0] != rows[1] for rows in first), (
        "the two samples of a prompt are equal: one stream per prompt?"
    )


def test_engine_builds_no_autograd_graph():
    """S0 tensors require grad; the engine must still run without autograd (a batch-84 prefill with autograd on
    took the training route and ran out of 139 GiB, issue 13)."""
    tok = tiny_tokenizer()
    adapter = with_adapter("qwen3_5", "s0")
    assert all(p.requires_grad for p in adapter.parameters())
    seen = []
    head = adapter.model.get_output_embeddings()
    handle = head.register_forward_hook(
        lambda m, a, out: seen.append((torch.is_grad_enabled(), out.requires_grad))
    )
    ids, mask = batch(tok)
    with torch.enable_grad(), adapter.active():
        decode(adapter.model, ids, mask, 4, [], tok.pad_token_id, temperature=0.7, top_p=0.9)
    handle.remove()
    assert seen and not any(g or r for g, r in seen)


def test_engine_selection():
    model = tiny("qwen3_5")
    assert resolve_engine(model, "auto") == "hf"  # CPU: the reference
    assert resolve_engine(model, "static") == "static"
    assert resolve_engine(model, "hf") == "hf"
    assert unsupported_reason(tiny("falcon_h1")) is None and unsupported_reason(tiny("qwen2")) is None
    with pytest.raises(ValueError, match="engine"):
        resolve_engine(model, "fast")


@pytest.mark.parametrize(
    "family,method", [("qwen3_5", "state_offset"), ("falcon_h1", "s0"), ("qwen2", "prefix")]
)
def test_preflight_checks_the_static_engine(family, method):
    from s0.run.preflight import check_generation

    tok = tiny_tokenizer()
    adapter = with_adapter(family, method)
    with adapter.active():
        report = check_generation(
            adapter.model, tok, PROMPTS, GenerationSpec(max_new_tokens=8, engine="static")
        )
    assert report["engine"] == "static" and report["tokens_agree"] + report["near_ties"] > 4


def test_inplace_gdn_decode_step_equals_transformers_kernel():
    from transformers.models.qwen3_5 import modeling_qwen3_5 as qm

    from s0.adapters.injection import pytorch_kernel
    from s0.decode import gdn_decode_inplace

    gen = torch.Generator().manual_seed(0)
    b, n_k, n_v, k_dim, v_dim = 3, 2, 4, 16, 8
    q, k = torch.randn(b, 1, n_k, k_dim, generator=gen), torch.randn(b, 1, n_k, k_dim, generator=gen)
    v = torch.randn(b, 1, n_v, v_dim, generator=gen)
    g, beta = -torch.rand(b, 1, n_v, generator=gen), torch.rand(b, 1, n_v, generator=gen)
    state = torch.randn(b, n_v, k_dim, v_dim, generator=gen)
    kw = dict(g=g, beta=beta, output_final_state=True, use_qk_l2norm_in_kernel=True)
    ref_out, ref_state = pytorch_kernel(qm, "torch_recurrent_gated_delta_rule")(
        q, k, v, initial_state=state.clone(), **kw
    )
    buf = state.clone()
    out, new_state = gdn_decode_inplace(q, k, v, initial_state=buf, **kw)
    assert new_state.data_ptr() == buf.data_ptr(), "not in place"
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new_state, ref_state, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["s0", "state_offset"])
def test_inplace_gdn_decode_in_the_engine_equals_native(method, monkeypatch):
    import s0.decode

    calls = []
    kernel = s0.decode.gdn_decode_inplace
    monkeypatch.setattr(s0.decode, "gdn_decode_inplace", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    tok = tiny_tokenizer()
    adapter = with_adapter("qwen3_5", method)
    ids, mask = batch(tok)
    with adapter.active():
        native = decode(adapter.model, ids, mask, 8, [], tok.pad_token_id, keep_scores=True)
        inplace = decode(
            adapter.model, ids, mask, 8, [], tok.pad_token_id, keep_scores=True, gdn_decode="inplace"
        )
    assert len(calls) == 7 * 6, "not every decode step of the 6 GDN layers went through the in-place kernel"
    assert torch.equal(native.tokens, inplace.tokens)
    torch.testing.assert_close(inplace.scores, native.scores, atol=2e-4, rtol=1e-4)


def test_gdn_decode_auto_is_native_on_cpu():
    from s0.decode import resolve_gdn_decode

    assert resolve_gdn_decode("auto", torch.device("cpu")) == "native"
    assert resolve_gdn_decode("inplace", torch.device("cpu")) == "inplace"
    with pytest.raises(ValueError, match="gdn_decode"):
        tok = tiny_tokenizer()
        ids, mask = batch(tok)
        decode(tiny("qwen3_5"), ids, mask, 2, [], tok.pad_token_id, gdn_decode="fast")


@pytest.mark.parametrize("family,gdn_decode", [("qwen3_5", "inplace"), ("falcon_h1", "native")])
def test_compiled_step_is_one_graph_equal_to_eager(family, gdn_decode, monkeypatch):
    """The compiled decode step (compile_step=True) traces the whole model forward as ONE graph and equals the eager
    step. A graph break per dispatcher (ContextVar.get) gave one resumed frame per layer: past dynamo's recompile
    limit the H200 ran them eager without a word (issue 13). Backend "eager": dynamo's tracing, no code generation."""
    from torch._dynamo.utils import counters

    import s0.decode

    monkeypatch.setattr(s0.decode, "COMPILE_BACKEND", "eager")
    tok = tiny_tokenizer()
    adapter = with_adapter(family, "s0")
    ids, mask = batch(tok)
    with adapter.active():
        eager = decode(
            adapter.model, ids, mask, 8, [], tok.pad_token_id, gdn_decode=gdn_decode, compile_step=False
        )
        counters.clear()
        timings = {}
        compiled = decode(adapter.model, ids, mask, 8, [], tok.pad_token_id, gdn_decode=gdn_decode,
                          compile_step=True, timings=timings)  # fmt: skip
        assert timings["compiled"]
        assert not counters["graph_break"], f"graph breaks: {dict(counters['graph_break'])}"
        assert counters["stats"]["unique_graphs"] == 1
        again = decode(
            adapter.model, ids, mask, 8, [], tok.pad_token_id, gdn_decode=gdn_decode, compile_step=True
        )
        assert counters["stats"]["unique_graphs"] == 1, "the same shapes compiled again"
        for prompts in (
            PROMPTS[1:4],
            PROMPTS[:6],
        ):  # other batch sizes and widths: one dynamic recompile at most
            decode(adapter.model, *batch(tok, prompts), 4, [], tok.pad_token_id, gdn_decode=gdn_decode,
                   compile_step=True)  # fmt: skip
        assert counters["stats"]["unique_graphs"] <= 2, "a graph per shape: long runs would hit the limit"
    assert torch.equal(compiled.tokens, eager.tokens) and torch.equal(again.tokens, eager.tokens)
    plain = decode(
        adapter.model, ids, mask, 8, [], tok.pad_token_id, gdn_decode=gdn_decode, compile_step=True
    )
    assert not torch.equal(plain.tokens, eager.tokens), "S0 did not change the tokens: the test shows nothing"


def test_compile_is_refused_where_an_adapter_acts_at_every_step():
    """A compiled dispatcher cannot see the active call, so state-offset (a readout at every step) must never run
    compiled: compile_step=True stops in one line; S0 (which acts only when a sequence starts) compiles."""
    from s0.adapters.injection import per_step_layers
    from s0.decode import resolve_compile

    offset, s0 = with_adapter("qwen3_5", "state_offset"), with_adapter("qwen3_5", "s0")
    assert per_step_layers(offset.model) == [] and resolve_compile(True, offset.model, False)
    with offset.active():
        assert len(per_step_layers(offset.model)) == 6  # the tiny model's GDN layers
        assert not resolve_compile(False, offset.model, False)
        with pytest.raises(ValueError, match="every decode step"):
            tok = tiny_tokenizer()
            ids, mask = batch(tok)
            decode(offset.model, ids, mask, 2, [], tok.pad_token_id, compile_step=True)
    assert per_step_layers(offset.model) == []
    with s0.active():
        assert per_step_layers(s0.model) == [] and resolve_compile(True, s0.model, False)
        assert not resolve_compile(True, s0.model, True)  # kept scores: the eager path


@pytest.mark.parametrize("family", sorted(f for f, spec in FAMILIES.items() if spec.kind and spec.tiny_arch))
def test_every_family_is_decoded_exactly_or_refused(family):
    """Each registered family with a recurrence kind: the engine either says why it cannot run the model (and
    `generate` runs it, engine auto) or its greedy tokens with S0 active equal `generate`'s and S0 moves its
    scores. A new family cannot reach the engine untested (pure Mamba models crashed in it before)."""
    model = build_model(family, {**TINY_ARCH[family], "initializer_range": 0.3}, dtype=torch.float32)
    reason = unsupported_reason(model)
    if reason is not None:
        assert resolve_engine(model, "auto", torch.device("cuda")) == "hf"
        with pytest.raises(ValueError, match="cannot run this model"):
            resolve_engine(model, "static")
        return
    adapter = build_adapter("s0", model, alpha=0.5, seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    n, pad = 6, tok.pad_token_id
    with adapter.active():
        ref, _ = hf_generate(model, ids, mask, n, [-1], pad)
        mine = decode(model, ids, mask, n, [], pad, keep_scores=True)
    base = decode(model, ids, mask, n, [], pad, keep_scores=True)
    assert torch.equal(mine.tokens, ref)
    assert (mine.scores[:, 0] - base.scores[:, 0]).abs().max() > 1e-3, "S0 did not reach the engine's prefill"


def test_s0_survives_a_users_torch_compile_of_the_model():
    """Outside s0.decode's compiled step the dispatchers read the active call as always, also inside a trace: a
    user's torch.compile of a model with S0 active must still inject S0 (a trace that read "no call" would drop
    it without a word)."""
    adapter = with_adapter("qwen3_5", "s0")
    tok = tiny_tokenizer()
    ids, mask = batch(tok)
    compiled = torch.compile(adapter.model, backend="eager")
    with torch.no_grad():
        base = adapter.model(input_ids=ids, attention_mask=mask).logits
        with adapter.active():
            eager = adapter.model(input_ids=ids, attention_mask=mask).logits
            traced = compiled(input_ids=ids, attention_mask=mask).logits
    assert (eager - base).abs().max() > 1e-3, "S0 does not move the logits: the test shows nothing"
    torch.testing.assert_close(traced, eager)
