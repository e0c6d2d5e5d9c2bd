"""Model registry: real-size architectures on the meta device match the paper's parameter counts, and the
tiny models build offline, run forward and generate, and expose their recurrent layers."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from s0.adapters.kinds import KINDS, recurrent_layers, require_recurrent_layers
from s0.models import (
    FAMILIES,
    TINY_ARCH,
    ModelError,
    build_model,
    count_parameters,
    n_recurrent_layers,
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


@pytest.mark.parametrize("family", sorted(TINY_ARCH))
def test_tiny_model_has_its_familys_kind_and_config_layer_count(family):
    """Each family file's `kind` is what the kind registry finds in its tiny model (no recurrent layer for a pure
    Transformer), and the config-only count (n_recurrent_layers, which validates method.layers) equals the build's."""
    layers = recurrent_layers(build_model(family, TINY_ARCH[family], weights="meta"))
    kind = FAMILIES[family].kind
    assert {r.kind for r in layers} == ({kind} if kind else set())
    assert n_recurrent_layers(family, TINY_ARCH[family]) == len(layers) > (0 if kind else -1)


@pytest.mark.parametrize("family", sorted(f for f in TINY_ARCH if FAMILIES[f].kind))
def test_kind_lists_its_families_modeling_modules(family):
    """install_known (backend routing, decode kernel overrides before any adapter) reaches a family only through
    its kind's `modules`: each recurrent mixer's modeling module must be listed there."""
    layers = recurrent_layers(build_model(family, TINY_ARCH[family], weights="meta"))
    for mod, kind in {(type(r.module).__module__, r.kind) for r in layers}:
        assert mod in KINDS[kind].modules, f"{mod} missing from s0/adapters/kinds/{kind}.py's modules"


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


# --- Checkpoints in the hub's real layouts, saved offline with save_pretrained and loaded as the hub path does.

TINY_VISION = dict(
    depth=1,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    out_hidden_size=64,
    patch_size=4,
    num_position_embeddings=16,
)


def save_multimodal_qwen3_5(path, tied: bool, flag_at: str):
    """A tiny Qwen3_5ForConditionalGeneration (the hub's class) saved to `path`, with the tie flag written
    only where `flag_at` says ("top", "text", "both"; "conflict": the top level's true flag, which the
    saving class reads, and the opposite in text_config), plus an `mtp.*` weight like the hub's. Returns the
    saved model."""
    from safetensors.torch import load_file, save_file
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    text = {k: v for k, v in TINY_ARCH["qwen3_5"].items() if k != "tie_word_embeddings"}
    text["num_hidden_layers"] = 4  # 3 GDN + 1 attention: both kinds of layer, and fast
    config = Qwen3_5Config(text_config=text, vision_config=TINY_VISION, tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = Qwen3_5ForConditionalGeneration(config).eval()
    assert (model.lm_head.weight is model.model.language_model.embed_tokens.weight) == tied
    model.save_pretrained(path)
    raw = json.loads((path / "config.json").read_text())
    if flag_at == "conflict":
        raw["text_config"]["tie_word_embeddings"] = not tied
    else:
        raw.pop("tie_word_embeddings", None)
        raw["text_config"].pop("tie_word_embeddings", None)
        if flag_at in ("top", "both"):
            raw["tie_word_embeddings"] = tied
        if flag_at in ("text", "both"):
            raw["text_config"]["tie_word_embeddings"] = tied
    (path / "config.json").write_text(json.dumps(raw))
    tensors = load_file(path / "model.safetensors")
    tensors["mtp.fc.weight"] = torch.ones(4, 4)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    return model


def text_weights(model) -> dict[str, torch.Tensor]:
    """The saved model's text weights under the causal LM's names (the head included even when tied)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.visual."):
            continue
        out[key.replace("model.language_model.", "model.")] = value
    return out


def assert_loads_bit_exactly(loaded, saved, multimodal: bool = False):
    expected = text_weights(saved) if multimodal else saved.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    differ = [k for k in expected if not torch.equal(got[k], expected[k])]
    assert not differ, f"weights differ from the saved model: {differ[:3]}"
    ids = tiny_tokenizer()("def add(a, b):\n    return", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        reference = saved(input_ids=ids).logits
        assert torch.equal(loaded(input_ids=ids).logits, reference)
        loaded.tie_weights()  # what peft and resizing may call later: must not change the head
        assert torch.equal(loaded(input_ids=ids).logits, reference)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("flag_at", ["top", "text", "both", "conflict"])
def test_multimodal_qwen3_5_checkpoint_round_trips(tmp_path, tied, flag_at):
    """Hub Qwen3.5 checkpoints are ConditionalGeneration: the text weights load bit-exactly into the causal
    LM, the head is tied wherever the flag sits, and the dropped vision and mtp weights are listed."""
    saved = save_multimodal_qwen3_5(tmp_path, tied, flag_at)
    loaded = build_model("qwen3_5", hub_id=str(tmp_path), weights="hub")
    assert_loads_bit_exactly(loaded, saved, multimodal=True)
    report = loaded.s0_load_report
    n_visual = sum(k.startswith("model.visual.") for k in saved.state_dict())
    assert report["checkpoint_class"] == "Qwen3_5ForConditionalGeneration"
    assert report["ignored"]["model.visual."]["n"] == n_visual > 0
    assert report["ignored"]["mtp."]["n"] == 1
    assert report["missing"] == report["unexpected"] == []
    assert report["tie_word_embeddings"] == tied
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tied
    assert report["verified_bit_exact"] == report["loaded_keys"] == len(text_weights(saved)) - tied


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("family", ["falcon_h1", "qwen2"])
def test_causal_lm_checkpoint_round_trips(tmp_path, family, tied):
    saved = build_model(family, {**TINY_ARCH[family], "tie_word_embeddings": tied}, seed=3)
    saved.save_pretrained(tmp_path)
    loaded = build_model(family, hub_id=str(tmp_path), weights="hub")
    assert_loads_bit_exactly(loaded, saved)
    report = loaded.s0_load_report
    assert report["layout"] == "causal_lm" and report["ignored"] == {}
    assert report["tie_word_embeddings"] == tied and report["lm_head"].startswith("tied" if tied else "from")


def rewrite_weights(path, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    edit(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    ("tied", "deleted", "named"),
    [
        (True, "model.language_model.layers.0.linear_attn.A_log", "model.layers.0.linear_attn.A_log"),
        (True, "model.language_model.norm.weight", "model.norm.weight"),
        (False, "lm_head.weight", "lm_head.weight"),  # an untied head must come from the checkpoint
    ],
)
def test_checkpoint_with_a_missing_weight_is_refused(tmp_path, tied, deleted, named):
    save_multimodal_qwen3_5(tmp_path, tied, "both")
    rewrite_weights(tmp_path, lambda t: t.pop(deleted))
    with pytest.raises(ModelError, match=rf"1 missing \[{named}\]"):
        build_model("qwen3_5", hub_id=str(tmp_path), weights="hub")


def test_untied_checkpoint_without_a_head_is_refused(tmp_path):
    """Flags false at every level and no lm_head in the file: a random head, so refused."""
    save_multimodal_qwen3_5(tmp_path, True, "both")
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["tie_word_embeddings"] = raw["text_config"]["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"missing \[lm_head\.weight\]"):
        build_model("qwen3_5", hub_id=str(tmp_path), weights="hub")


@pytest.mark.parametrize(
    "extra",
    ["model.language_model.layers.0.mlp.extra.weight", "model.extra_head.weight", "visual.proj.weight"],
)
def test_checkpoint_with_an_unknown_weight_is_refused(tmp_path, extra):
    save_multimodal_qwen3_5(tmp_path, True, "both")
    rewrite_weights(tmp_path, lambda t: t.__setitem__(extra, torch.zeros(2)))
    with pytest.raises(ModelError, match=r"1 unexpected"):
        build_model("qwen3_5", hub_id=str(tmp_path), weights="hub")


def test_random_weights_have_a_load_report():
    model = build_model("qwen2", TINY_ARCH["qwen2"], seed=5)
    assert model.s0_load_report == {"weights": "random", "seed": 5, "dtype": "float32"}


@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
def test_random_half_precision_weights_are_created_in_that_dtype(family):
    """A bf16 random-weight model never holds fp32 parameters, not even during construction (a 7B model built in
    fp32 and then cast needs 28 GiB, issue 13): every parameter registered while building is already bf16."""
    from torch.nn.modules.module import register_module_parameter_registration_hook

    seen: list[torch.dtype] = []
    handle = register_module_parameter_registration_hook(lambda module, name, p: seen.append(p.dtype))
    try:
        model = build_model(family, TINY_ARCH[family], dtype=torch.bfloat16)
    finally:
        handle.remove()
    assert len(seen) >= len(list(model.parameters())) > 0
    assert set(seen) == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # restored


def test_weights_checksum_sees_one_ulp_and_a_swap_on_the_device_path(monkeypatch):
    """The accelerator path of s0.adapters.base.weights_checksum (two 64-bit word sums per tensor, computed where
    the tensor lives), run here on CPU tensors: one changed ULP changes both sums, two swapped words change the
    weighted one, and chunking (forced small) gives the same sums as one pass."""
    from s0.adapters import base

    model = build_model("qwen3_5", TINY_ARCH["qwen3_5"], dtype=torch.bfloat16)
    w = next(model.parameters()).detach().clone()
    ref = [int(x) for x in base._word_sums(w)]
    bumped = w.clone()
    bumped.view(-1).view(torch.int16)[7] += 1  # the next bf16 value: one unit in the last place
    assert all(a != int(b) for a, b in zip(ref, base._word_sums(bumped)))
    swapped = w.clone().view(-1)
    i, j = 3, 1000
    assert swapped[i] != swapped[j]
    swapped[i], swapped[j] = w.view(-1)[j], w.view(-1)[i]
    plain, weighted = (int(x) for x in base._word_sums(swapped))
    assert plain == ref[0] and weighted != ref[1]
    monkeypatch.setattr(base, "_CHUNK", 64)
    assert [int(x) for x in base._word_sums(w)] == ref
    assert base.weights_checksum(model) == base.weights_checksum(
        build_model("qwen3_5", TINY_ARCH["qwen3_5"], dtype=torch.bfloat16)
    )


def test_weights_checksum_reads_zero_dim_buffers():
    """RecurrentGemma keeps a 0-dim buffer (model.normalizer); the host path once raised on it, failing every run
    of that family. A changed 0-dim value must change the checksum."""
    from s0.adapters.base import weights_checksum

    model = build_model("recurrent_gemma", TINY_ARCH["recurrent_gemma"])
    zero_dim = [b for _, b in model.named_buffers() if b.dim() == 0]
    assert zero_dim, "the tiny RecurrentGemma no longer has a 0-dim buffer; pick another model for this test"
    before = weights_checksum(model)
    zero_dim[0].add_(1)
    assert weights_checksum(model) != before
