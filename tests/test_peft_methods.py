"""LoRA and prefix tuning through peft: configs as in the paper, the shared on/off and save surface, merge, and
leaving a shared base model exactly as it was."""

from __future__ import annotations

import json

import pytest
import torch

from s0.adapters import AdapterError, LoraAdapter, PrefixAdapter, build_adapter, load_adapter
from s0.adapters import injection as inj
from s0.adapters.base import weights_checksum
from s0.models import TINY_ARCH, build_model, tiny_tokenizer
from s0.train import TrainExample, train

inj.install_known()  # on a machine with fla / mamba-ssm, CPU tensors must not reach their CUDA kernels

IDS = torch.tensor([[5, 77, 130, 9, 201, 18]])


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(family: str):
    return build_model(family, TINY_ARCH[family], dtype=torch.float32)


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def perturb(adapter, seed: int = 0):
    """As if trained: LoRA's B starts at zero (no effect), so give every trainable tensor random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return adapter


@pytest.mark.parametrize(
    ("family", "targets"),
    [
        ("qwen3_5", {"q_proj", "k_proj", "v_proj", "o_proj"}),
        ("falcon_h1", {"q_proj", "k_proj", "v_proj", "in_proj"}),
    ],
)
def test_lora_config_follows_the_paper(family, targets):
    model = tiny(family)
    adapter = build_adapter("lora", model, r=4, seed=0)
    cfg = adapter.model.peft_config["default"]
    assert cfg.r == 4 and cfg.lora_alpha == 8 and cfg.lora_dropout == 0.0  # lora_alpha = 2r (App F)
    assert set(cfg.target_modules) == targets
    wrapped = {n.split(".")[-1] for n, m in adapter.model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == targets
    expected = sum(
        4 * (m.in_features + m.out_features)
        for n, m in adapter.model.named_modules()
        if hasattr(m, "lora_A") and isinstance(m.base_layer, torch.nn.Linear)
    )
    assert adapter.num_trainable() == expected
    assert build_adapter("lora", tiny(family), r=4, lora_alpha=3).model.peft_config["default"].lora_alpha == 3


def test_lora_on_off_merge_and_remove_leave_weights_untouched():
    model = tiny("qwen3_5")
    checksum, base = weights_checksum(model), logits(model)
    adapter = build_adapter("lora", model, r=4, seed=0)
    assert torch.equal(logits(adapter.model), base)  # B = 0 at init
    perturb(adapter)
    on = logits(adapter.model)
    assert (on - base).abs().max() > 1e-3
    with adapter.inactive():
        assert torch.equal(logits(adapter.model), base)
    assert torch.equal(logits(adapter.model), on)
    adapter.merge()
    assert torch.allclose(logits(adapter.model), on, atol=1e-5)
    adapter.unmerge()
    adapter.remove()  # the runner reuses the loaded model for the next run
    assert weights_checksum(model) == checksum
    assert not any(hasattr(m, "lora_A") for m in model.modules())
    assert torch.equal(logits(model), base)


def test_lora_seed_decides_the_initial_weights():
    init = [
        {
            k: v.clone()
            for k, v in build_adapter("lora", tiny("falcon_h1"), r=4, seed=s).named_parameters().items()
        }
        for s in (1, 1, 2)
    ]
    assert all(torch.equal(init[0][k], init[1][k]) for k in init[0])
    assert any(not torch.equal(init[0][k], init[2][k]) for k in init[0])


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_save_and_load_give_identical_logits(tmp_path, method):
    family = "qwen2" if method == "prefix" else "falcon_h1"
    adapter = perturb(build_adapter(method, tiny(family), r=4, num_virtual_tokens=5, seed=0))
    expected = logits(adapter.model)
    adapter.save(tmp_path, extra_meta={"data_hash": "abc"})
    assert {"adapter_config.json", "adapter_model.safetensors", "s0_meta.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    meta = json.loads((tmp_path / "s0_meta.json").read_text())
    assert meta["s0_method"] == method and meta["extra_meta"]["data_hash"] == "abc"
    loaded = load_adapter(tmp_path, tiny(family))
    assert type(loaded) is type(adapter)
    assert torch.allclose(logits(loaded.model), expected, atol=1e-6)
    with pytest.raises(AdapterError, match="model_type"):
        load_adapter(tmp_path, tiny("qwen3_5"))


def test_prefix_tuning_control_on_a_pure_transformer():
    """Sec 5.8: 30 virtual tokens with prefix_projection on Qwen2; trains through the shared loop, generates,
    switches off."""
    model = tiny("qwen2")
    base = logits(model)
    adapter = build_adapter("prefix", model, seed=0)
    assert isinstance(adapter, PrefixAdapter)
    cfg = adapter.model.peft_config["default"]
    assert cfg.num_virtual_tokens == 30 and cfg.prefix_projection
    assert (logits(adapter.model) - base).abs().max() > 1e-4
    res = train(
        adapter,
        [TrainExample([1, 2, 3], [4, 5]), TrainExample([7, 8], [9])],
        steps=2,
        lr=1e-2,
        progress=False,
    )
    assert res.losses[1] < res.losses[0]
    tok = tiny_tokenizer()
    enc = tok(["hi", "hello there"], return_tensors="pt", padding=True)
    out = adapter.model.generate(**enc, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (2, enc.input_ids.shape[1] + 3)
    with adapter.inactive():
        assert torch.equal(logits(adapter.model), base)
    adapter.remove()
    assert torch.equal(logits(model), base)


def prefix_that_matters(n_virtual: int = 5):
    """A tiny Qwen2 whose greedy tokens depend on the prefix: a larger init (at 0.02 the tied embedding decides
    the argmax) and random prefix weights, as if trained."""
    model = build_model("qwen2", {**TINY_ARCH["qwen2"], "initializer_range": 0.2}, dtype=torch.float32)
    adapter = build_adapter("prefix", model, num_virtual_tokens=n_virtual, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return model, adapter


def greedy_full_forwards(model, ids: torch.Tensor, n_new: int) -> list[int]:
    """Greedy decoding by full forwards without a cache: for the PeftModel this is the training path."""
    with torch.no_grad():
        for _ in range(n_new):
            nxt = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids[0, -n_new:].tolist()


def greedy_generate(model, tok, prompts: list[str], n_new: int, **kwargs) -> list[list[int]]:
    enc = tok(prompts, return_tensors="pt", padding=True)  # the tiny tokenizer pads left, as the harness does
    with torch.no_grad():
        out = model.generate(
            **enc, max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id, **kwargs
        )
    return out[:, enc.input_ids.shape[1] :].tolist()


def test_prefix_generate_sees_the_prefix_alone_and_in_left_padded_batches():
    """Sec 5.8's control is evaluated through `generate`: it must decode what the trained forward computes. With
    transformers 5.24 peft's prefix was dropped in generate (tokens equal to the base model's)."""
    model, adapter = prefix_that_matters()
    tok, n = tiny_tokenizer(), 6
    prompts = ["a", "def f(x):", "hello world", "12+34="]
    ids = [tok([p], return_tensors="pt").input_ids for p in prompts]
    full = [greedy_full_forwards(adapter.model, x, n) for x in ids]
    base = [greedy_full_forwards(model, x, n) for x in ids]
    assert all(f != b for f, b in zip(full, base))  # the full forward uses the prefix
    singles = [greedy_generate(adapter.model, tok, [p], n)[0] for p in prompts]
    assert singles == full
    assert greedy_generate(adapter.model, tok, prompts, n) == singles  # left-padded: each row as if alone
    assert greedy_generate(adapter.model, tok, prompts, n, use_cache=False) == singles
    with adapter.inactive():
        assert greedy_generate(adapter.model, tok, prompts, n) == base


def test_lora_needs_targets_for_unknown_families():
    model = tiny("qwen2")
    model.config.model_type = "unknown_family"
    with pytest.raises(AdapterError, match="target_modules"):
        LoraAdapter(model)


S0_PARAMS_QWEN3_5_4B = 24 * 32 * 128 * 128  # S0 on Qwen3.5-4B: 24 GDN layers x H x K x V (Table 1: 12.6M)


def test_prefix_control_is_parameter_matched_to_s0(compose):
    """Sec 5.8 "matched parameter count": every prefix arm of prefix_control, built on the real Qwen2.5-3B
    architecture (meta device, no weights), trains within 2% of S0's 12,582,912 (issue 12)."""
    import dataclasses

    from tests.test_config import plan

    assert S0_PARAMS_QWEN3_5_4B == 12_582_912
    _, runs = plan(compose, ["experiment=prefix_control", "seed=42"])
    prefix_runs = [r for r in runs if r.method.name == "prefix"]
    assert len(prefix_runs) == 3 and {r.method.encoder_hidden_size for r in prefix_runs} == {672}
    run = prefix_runs[0]
    assert run.model.name == "qwen2_5_3b_instruct"
    model = build_model(run.model.family, run.model.arch, weights="meta")
    fields = {
        k: v
        for k, v in dataclasses.asdict(run.method).items()
        if k not in ("name", "micro_batch_size", "max_tokens")
    }
    adapter = build_adapter("prefix", model, seed=run.seed, **fields)
    n = adapter.num_trainable()
    assert n == 26_112 + 18_689 * 672 == 12_585_120  # the arithmetic in conf/experiment/prefix_control.yaml
    assert abs(n - S0_PARAMS_QWEN3_5_4B) / S0_PARAMS_QWEN3_5_4B < 0.02
    # the previous wiring (projection width = hidden_size) was 3x S0's count
    assert (
        build_adapter("prefix", build_model("qwen2", run.model.arch, weights="meta")).num_trainable()
        == 38_301_184
    )


def test_prefix_encoder_hidden_size_reaches_peft_and_is_validated():
    from s0.run.config import ConfigError, MethodConfig, validate_method

    adapter = build_adapter("prefix", tiny("qwen2"), encoder_hidden_size=16, seed=0)
    assert adapter.model.peft_config["default"].encoder_hidden_size == 16
    assert adapter.config.encoder_hidden_size == 16
    with pytest.raises(ConfigError, match="encoder_hidden_size"):
        validate_method(MethodConfig(name="prefix", encoder_hidden_size=0))
    with pytest.raises(ConfigError, match="prefix_projection"):
        validate_method(MethodConfig(name="prefix", encoder_hidden_size=16, prefix_projection=False))


def test_prefix_on_a_hybrid_model_is_refused_in_one_line():
    """peft's prefix cache holds no recurrent state: on Qwen3.5 or FalconH1 the forward used to stop deep in
    transformers ("Cannot get conv state ..."). Refused when the adapter is built, naming the reason."""
    for family in ("qwen3_5", "falcon_h1"):
        model = build_model(family, TINY_ARCH[family], dtype=torch.float32)
        with pytest.raises(AdapterError, match="needs a pure Transformer") as err:
            build_adapter("prefix", model, num_virtual_tokens=4, seed=0)
        assert "\n" not in str(err.value)
