"""The shared training loop: the loss it optimises, batching that does not change the gradient, L2, clipping,
seeding and logging."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from s0.adapters import S0Adapter, StateOffsetAdapter, build_adapter
from s0.adapters import injection as inj
from s0.models import TINY_ARCH, build_model, tiny_tokenizer
from s0.train import TrainExample, collate, encode_pair, make_batches, train

inj.install_known()  # on a machine with fla / mamba-ssm, CPU tensors must not reach their CUDA kernels


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(family: str, dtype=torch.float64):
    return build_model(family, TINY_ARCH[family], dtype=dtype)


def examples(n: int = 6, seed: int = 0) -> list[TrainExample]:
    """Prompts and completions of different lengths (so batches are padded), token ids from the tiny vocab."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        p, c = int(torch.randint(3, 12, (1,), generator=g)), int(torch.randint(2, 9, (1,), generator=g))
        out.append(TrainExample(torch.randint(0, 250, (p,), generator=g).tolist(), torch.randint(0, 250, (c,), generator=g).tolist()))  # fmt: skip
    return out


def filled(adapter, seed: int = 1):
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype))
    return adapter


def one_step(make_adapter, batching: str, padding_side: str = "right", max_tokens_override=None, **kw):
    adapter = make_adapter()
    max_tokens = max_tokens_override or 40
    res = train(adapter, examples(), steps=1, lr=1e-2, l2=1e-3, grad_clip=0.5, batching=batching,
                padding_side=padding_side, progress=False, micro_batch_size=4, max_tokens=max_tokens, **kw)  # fmt: skip
    grads = torch.cat([p.grad.flatten() for p in adapter.parameters()])
    params = torch.cat([p.detach().flatten() for p in adapter.parameters()])
    return res, grads, params


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


MAKERS = {
    "s0-qwen3_5": lambda: filled(S0Adapter(tiny("qwen3_5"), alpha=0.5, alpha_mode="train_and_inference", dtype=torch.float64)),
    "s0-falcon_h1": lambda: filled(S0Adapter(tiny("falcon_h1"), alpha=0.65, alpha_mode="train_and_inference", dtype=torch.float64)),
    "offset-qwen3_5": lambda: filled(StateOffsetAdapter(tiny("qwen3_5"), alpha=0.5, dtype=torch.float64)),
    "lora-falcon_h1": lambda: build_adapter("lora", tiny("falcon_h1"), r=4, seed=0),
    "prefix-qwen2": lambda: build_adapter("prefix", tiny("qwen2"), num_virtual_tokens=4, seed=0),
}  # fmt: skip


CASES = [
    ("s0-qwen3_5", "padded", "right"),
    ("s0-qwen3_5", "packed", "right"),
    ("s0-qwen3_5", "padded", "left"),  # exercises the pad fix in training
    ("s0-falcon_h1", "padded", "right"),
    ("s0-falcon_h1", "padded", "left"),
    ("offset-qwen3_5", "packed", "right"),
    ("lora-falcon_h1", "packed", "right"),
    ("prefix-qwen2", "padded", "right"),
    ("s0-qwen3_5", "padded-tokens", "right"),  # padded micro-batches cut by the token budget, not the count
    ("lora-falcon_h1", "padded-tokens", "right"),
]


@functools.cache
def reference_step(name: str):
    return one_step(MAKERS[name], "per_example")


@pytest.mark.parametrize(("name", "batching", "side"), CASES)
def test_batched_step_equals_per_example_accumulated_step(name, batching, side):
    """One optimizer step over 6 examples of different lengths: batched (padded or packed, micro-batches of
    up to 4) equals the reference's one-example-at-a-time accumulation in loss, gradient and updated tensors,
    to 1e-6 relative (float64 models)."""
    ref, ref_g, ref_p = reference_step(name)
    if batching == "padded-tokens":  # 20 tokens: micro-batches of 1-2 rows although 4 are allowed
        res, g, p = one_step(MAKERS[name], "padded", side, max_tokens_override=20)
        assert res.token_budget["micro_batches"] > 2 and res.token_budget["largest_micro_batch_tokens"] <= 20
    else:
        res, g, p = one_step(MAKERS[name], batching, side)
    assert abs(res.losses[0] - ref.losses[0]) < 1e-6 * abs(ref.losses[0])
    assert abs(res.grad_norms[0] - ref.grad_norms[0]) < 1e-6 * ref.grad_norms[0]
    assert rel(g, ref_g) < 1e-6 and rel(p, ref_p) < 1e-6
    assert ref_g.abs().max() > 0


def test_loss_is_mean_completion_ce_per_example_then_mean_over_examples():
    """L = (1/N) sum_i mean_{t in completion_i} CE_t: prompt tokens masked, tokens averaged within an example."""
    model = tiny("falcon_h1")
    adapter = filled(S0Adapter(model, alpha=1.0, dtype=torch.float64))
    exs = examples()
    with adapter.active(), adapter.train_mode(), torch.no_grad():
        per_example = []
        for e in exs:
            ids = torch.tensor([e.prompt_ids + e.completion_ids])
            logp = F.log_softmax(model(input_ids=ids).logits[0], dim=-1)
            p, c = len(e.prompt_ids), len(e.completion_ids)
            per_example.append(
                -logp[p - 1 : p + c - 1].gather(1, torch.tensor(e.completion_ids)[:, None]).mean()
            )
    expected = float(torch.stack(per_example).mean())
    res = train(adapter, exs, steps=1, lr=1e-3, batching="padded", progress=False)
    assert abs(res.losses[0] - expected) < 1e-10


def test_collate_marks_exactly_the_completion_predictions():
    ex = [TrainExample([1, 2, 3], [4, 5]), TrainExample([6], [7, 8, 9])]
    for side in ("right", "left"):
        b = collate(ex, pad_id=0, padding_side=side)
        assert b["input_ids"].shape == (2, 5)
        assert b["target"][b["predict"]].tolist() == [4, 5, 7, 8, 9]
        assert b["attention_mask"].sum().item() == 9


def test_l2_clip_logging_and_seeded_repeatability():
    model = tiny("qwen3_5", dtype=torch.float32)
    rows = []
    runs = []
    for _ in range(2):
        adapter = filled(S0Adapter(model, alpha=0.07))
        sq = sum(float(p.detach().pow(2).sum()) for p in adapter.parameters())
        res = train(adapter, examples(4), steps=3, lr=1e-2, l2=5e-4, grad_clip=0.01, seed=7, progress=False,
                    log_fn=rows.append)  # fmt: skip
        runs.append(res)
        assert abs((res.objectives[0] - res.losses[0]) - 5e-4 * sq) < 1e-6 * sq  # L2 on the raw states
        total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in adapter.parameters()]))
        assert res.grad_norms[-1] > 0.01 and total <= 0.01 * (1 + 1e-5)  # clipped to grad_clip
        assert len(res.state_norms) == len(res.layer_norms) == 3 and set(res.layer_norms[0]) == set(
            adapter.named_parameters()
        )
    assert runs[0].losses == runs[1].losses and runs[0].state_norms == runs[1].state_norms
    assert [r["step"] for r in rows] == [1, 2, 3, 1, 2, 3]
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_training_lowers_the_loss_and_moves_only_the_states():
    model = tiny("qwen3_5", dtype=torch.float32)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = S0Adapter(model, alpha=0.07)
    exs = examples(3) * 2  # repeated examples: an easy target to fit
    res = train(adapter, exs, steps=15, lr=0.5, grad_clip=0, progress=False)
    assert res.losses[-1] < res.losses[0] - 1e-3
    assert (
        res.state_norms[-1] > 0
        and res.seconds > 0
        and res.n_completion_tokens == sum(len(e.completion_ids) for e in exs)
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    assert not adapter.is_active and not adapter.training  # train() restores both


def test_encode_pair_and_batches():
    tok = tiny_tokenizer()
    e = encode_pair(tok, "Q: 1+1?", " 2", add_eos=True)
    assert tok.decode(e.prompt_ids) == "Q: 1+1?" and e.completion_ids[-1] == tok.eos_token_id
    cut = encode_pair(tok, "abcdef", "ghijkl", max_length=8)
    assert len(cut.prompt_ids) + len(cut.completion_ids) == 8 and tok.decode(cut.completion_ids) == "gh"
    long = encode_pair(tok, "x" * 20, "yz", max_length=8)
    assert len(long.prompt_ids) == 7 and len(long.completion_ids) == 1
    exs = examples(10)
    for mode in ("per_example", "padded", "packed"):
        batches = make_batches(exs, mode, micro_batch_size=3, max_tokens=40)
        assert sorted(i for b in batches for i in b) == list(range(10))
    for mode in ("packed", "padded"):
        for b in make_batches(exs, mode, micro_batch_size=3, max_tokens=40):
            assert (
                len(b) == 1
                or len(b) * max(len(exs[i].prompt_ids) + len(exs[i].completion_ids) for i in b) <= 40
            )
            assert mode == "packed" or len(b) <= 3
    # padded: the count alone when the budget is large, as before
    assert [len(b) for b in make_batches(exs, "padded", micro_batch_size=3, max_tokens=10**6)] == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="batching"):
        make_batches(exs, "bucketed")


def test_auto_token_budget_fills_the_measured_free_memory(monkeypatch):
    """max_tokens=None on CUDA: the memory per token measured on the longest example and the memory still
    available give the budget (here faked: 8,000 bytes free, 100 bytes/token -> 0.8 * 80 = 64 tokens); the
    micro-batches keep to it and the budget is in the result. On the CPU, auto is the fixed CPU default."""
    import s0.train as train_mod

    adapter = filled(S0Adapter(tiny("qwen3_5", dtype=torch.float32), alpha=0.07))
    res = train(adapter, examples(), steps=1, lr=1e-3, max_tokens=None, progress=False)
    assert res.token_budget == {"max_tokens": train_mod.CPU_MAX_TOKENS, "source": "auto: cpu default", "checkpointing": False,
                                "micro_batches": 1, "largest_micro_batch_tokens": res.token_budget["largest_micro_batch_tokens"]}  # fmt: skip

    probed = []
    monkeypatch.setattr(
        train_mod, "probe_bytes_per_token", lambda m, b, d: probed.append(b["input_ids"].shape) or 100.0
    )
    monkeypatch.setattr(train_mod, "available_bytes", lambda d: 8000)
    budget = train_mod.resolve_max_tokens("auto", adapter.model, examples(), torch.device("cuda"),
                                          lambda b: collate(b, 0))  # fmt: skip
    longest = max(len(e.prompt_ids) + len(e.completion_ids) for e in examples())
    assert probed == [(1, longest)] and budget["max_tokens"] == 64 and budget["source"] == "auto: measured"
    assert budget["checkpointing"] is False
    monkeypatch.setattr(train_mod, "available_bytes", lambda d: 10)  # never below the longest example
    assert train_mod.resolve_max_tokens(None, adapter.model, examples(), torch.device("cuda"), lambda b: collate(b, 0))["max_tokens"] == longest  # fmt: skip


def test_auto_budget_turns_on_layer_checkpointing_when_the_longest_example_does_not_fit(monkeypatch):
    """The probe without checkpointing runs out of memory: the budget is measured again under per-layer
    checkpointing, and `checkpointing` says so."""
    import s0.train as train_mod

    adapter = filled(S0Adapter(tiny("qwen3_5", dtype=torch.float32), alpha=0.07))
    wrapped = []

    def probe(model, batch, device):
        layers = [m for n, m in model.named_modules() if n.endswith("layers.0")]
        wrapped.append(getattr(layers[0], "_s0_checkpointed", False))
        if not wrapped[-1]:
            raise torch.OutOfMemoryError("probe")
        return 10.0

    monkeypatch.setattr(train_mod, "probe_bytes_per_token", probe)
    monkeypatch.setattr(train_mod, "available_bytes", lambda d: 8000)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    budget = train_mod.resolve_max_tokens(
        None, adapter.model, examples(), torch.device("cuda"), lambda b: collate(b, 0)
    )
    assert wrapped == [False, True] and budget["checkpointing"] is True and budget["max_tokens"] == 640


@pytest.mark.parametrize("name", ["s0-falcon_h1", "lora-falcon_h1"])
def test_step_under_layer_checkpointing_equals_per_example(name, monkeypatch):
    """When the budget asks for checkpointing, train() recomputes every layer in the backward (S0 hooks and PEFT
    layers included) and the step is still the reference's."""
    import s0.train as train_mod

    used = []
    real = train_mod.layer_checkpointing

    def counting(model):
        used.append(model)
        return real(model)

    monkeypatch.setattr(train_mod, "layer_checkpointing", counting)
    monkeypatch.setattr(
        train_mod,
        "resolve_max_tokens",
        lambda *a: {"max_tokens": 40, "source": "test", "checkpointing": True},
    )
    ref, ref_g, ref_p = reference_step(name)
    res, g, p = one_step(MAKERS[name], "padded")
    assert used and res.token_budget["checkpointing"] is True
    assert abs(res.losses[0] - ref.losses[0]) < 1e-6 * abs(ref.losses[0])
    assert rel(g, ref_g) < 1e-6 and rel(p, ref_p) < 1e-6
