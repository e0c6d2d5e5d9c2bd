"""Model registry: real-size architectures on the meta device match the paper's parameter counts, and the
tiny models build offline, run forward and generate, and expose their recurrent layers."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from s0.models import (
    TINY_ARCH,
    ModelError,
    build_model,
    count_parameters,
    n_recurrent_layers,
    recurrent_layers,
    require_recurrent_layers,
    tiny_tokenizer,
)


def spec(root, name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(root / "conf" / "model" / f"{name}.yaml"))


def lora_params(model, targets: list[str], r: int) -> int:
    """What peft's LoRA adds: r x (in + out) per targeted Linear (counted by peft itself below)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    return sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize(
    ("name", "n_layers", "s0_params", "lora_r24", "total_b"),
    [
        # Sec 4.1 / Table 1: 24 GDN layers, 12.6M state (12,582,912 exactly), LoRA r24 on q,k,v,o 4.7M
        ("qwen3_5_4b", 24, 12_582_912, 4_718_592, 4.21),
        # Table 1: FalconH1-7B S0 34.6M over 44 Mamba-2 layers, LoRA r24 on q,k,v,in_proj 22.2M
        ("falcon_h1_7b", 44, 34_603_008, 22_192_896, 7.59),
        # App H: 0.8B, 18 GDN layers, 4.7M state
        ("qwen3_5_0_8b", 18, 4_718_592, None, 0.75),
        ("qwen3_5_2b", 18, 4_718_592, None, None),
        ("qwen3_5_9b", 24, 12_582_912, None, None),
    ],
)
def test_paper_parameter_counts(root, name, n_layers, s0_params, lora_r24, total_b):
    s = spec(root, name)
    model = build_model(s["family"], s["arch"], weights="meta")
    layers = recurrent_layers(model)
    assert len(layers) == n_layers == n_recurrent_layers(s["family"], s["arch"])
    assert sum(r.numel for r in layers) == s0_params
    if total_b is not None:
        assert count_parameters(model) / 1e9 == pytest.approx(total_b, abs=0.01)
    if lora_r24 is not None:  # last: peft injects the LoRA tensors into `model` itself
        assert lora_params(model, s["lora_targets"], 24) == lora_r24


def test_rank_matched_lora_counts(root):
    """Table 2: r48 is 9.4M and r64 equals S0's 12.6M exactly."""
    s = spec(root, "qwen3_5_4b")
    for r, expected in ((48, 9_437_184), (64, 12_582_912)):
        model = build_model(s["family"], s["arch"], weights="meta")
        assert lora_params(model, s["lora_targets"], r) == expected


def test_state_shapes_are_native(root):
    qwen = build_model("qwen3_5", spec(root, "qwen3_5_4b")["arch"], weights="meta")
    assert {r.state_shape for r in recurrent_layers(qwen)} == {(32, 128, 128)}  # value heads x K x V
    falcon = build_model("falcon_h1", spec(root, "falcon_h1_7b")["arch"], weights="meta")
    assert {r.state_shape for r in recurrent_layers(falcon)} == {(24, 128, 256)}  # heads x head dim x d_state


@pytest.mark.parametrize("family", sorted(TINY_ARCH))
def test_tiny_models_run_forward_and_generate(family):
    tok = tiny_tokenizer()
    model = build_model(family, TINY_ARCH[family], seed=0)
    again = build_model(family, TINY_ARCH[family], seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters())), "not deterministic"
    assert not any(p.requires_grad for p in model.parameters()), "weights must be frozen"
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "def add(a, b):"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    assert prompt.endswith("<think>\n\n</think>\n\n"), "thinking must be switched off"
    batch = tok([prompt, prompt + "x" * 9], return_tensors="pt", padding=True)
    logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()
    out = model.generate(**batch, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)


def test_tiny_recurrent_layers():
    qwen = build_model("qwen3_5", TINY_ARCH["qwen3_5"])
    assert [(r.index, r.kind, r.state_shape) for r in recurrent_layers(qwen)] == [
        (i, "gdn", (4, 16, 8)) for i in (0, 1, 2, 4, 5, 6)
    ]
    falcon = build_model("falcon_h1", TINY_ARCH["falcon_h1"])
    assert [(r.index, r.kind, r.state_shape) for r in recurrent_layers(falcon)] == [
        (i, "mamba2", (4, 8, 16)) for i in range(3)
    ]


def test_pure_transformer_has_no_recurrent_layers():
    model = build_model("qwen2", TINY_ARCH["qwen2"])
    assert recurrent_layers(model) == []
    with pytest.raises(ModelError, match="method=prefix"):
        require_recurrent_layers(model, "tiny_qwen2")


def test_tokenizer_round_trips_any_text():
    tok = tiny_tokenizer()
    text = "def f(x):\n    return x ** 2  # ∑ ünïcode\t"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.padding_side == "left" and tok.pad_token_id != tok.eos_token_id


def test_hub_load_offline_is_a_clear_error(monkeypatch):
    # what an offline machine sees, without waiting for network time-outs
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match=r"cannot load 'Qwen/Qwen3\.5-4B'"):
        build_model("qwen3_5", hub_id="Qwen/Qwen3.5-4B", weights="hub")
