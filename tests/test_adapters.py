"""S0 and state-offset adapters: layer discovery, zero init, no silent no-op, layer subsets, alpha semantics,
activate/deactivate/swap without touching weights, save/load and its failure messages, build/load dispatch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from s0.adapters import (
    DEFAULT_ALPHA_MODE,
    AdapterError,
    NullAdapter,
    S0Adapter,
    S0Config,
    StateOffsetAdapter,
    build_adapter,
    load_adapter,
)
from s0.adapters import injection as inj
from s0.adapters.base import weights_checksum
from s0.adapters.kinds import recurrent_layers
from s0.adapters.state import scaled_state
from s0.models import TINY_ARCH, ModelError, build_model
from s0.run.config import MethodConfig

inj.install_known()  # on a machine with fla / mamba-ssm, CPU tensors must not reach their CUDA kernels

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
IDS = torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240]])


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(family: str, dtype=torch.float64, **arch):
    return build_model(family, {**TINY_ARCH[family], **arch}, dtype=dtype)


def fill(adapter, scale: float = 1.0, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype) * scale)
    return adapter


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


SCALE = {"qwen3_5": 1.0, "falcon_h1": 30.0}  # Mamba-2 forgets fast in the random tiny model


def test_discovers_every_recurrent_layer_with_native_state_shape():
    q = S0Adapter(tiny("qwen3_5"))
    assert [r.index for r in q.layers] == [0, 1, 2, 4, 5, 6]  # layers 3 and 7 are attention
    assert {tuple(p.shape) for p in q.parameters()} == {(4, 16, 8)}  # value heads x key dim x value dim
    f = S0Adapter(tiny("falcon_h1"))
    assert [r.index for r in f.layers] == [0, 1, 2]
    assert {tuple(p.shape) for p in f.parameters()} == {(4, 8, 16)}  # heads x head dim x d_state
    with pytest.raises(ModelError, match="no recurrent"):
        S0Adapter(tiny("qwen2"))


@pytest.mark.parametrize(
    ("name", "n_layers", "shape", "millions"),
    [("qwen3_5_4b", 24, (32, 128, 128), 12.58), ("falcon_h1_7b", 44, (24, 128, 256), 34.60)],
)
def test_paper_scale_state_counts_and_file_size(tmp_path, name, n_layers, shape, millions):
    """Sec 4.1 / App A: 12.6M state values for Qwen3.5-4B (a ~48 MB file: 48 MiB of fp32), 34.6M for FalconH1-7B."""
    spec = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    model = build_model(spec["family"], spec["arch"], weights="meta")
    adapter = S0Adapter(model, device="cpu")
    assert len(adapter.layers) == n_layers and adapter.layers[0].state_shape == shape
    assert round(adapter.num_trainable() / 1e6, 2) == millions
    assert all(p.dtype == torch.float32 for p in adapter.parameters())
    if name == "qwen3_5_4b":
        adapter.save(tmp_path)
        size = (tmp_path / "adapter_model.safetensors").stat().st_size
        assert abs(size / 2**20 - 48.0) < 0.1  # 50.3e6 bytes


@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
def test_zero_initialised_fp32_and_zero_state_is_the_base_model(family):
    model = tiny(family)
    base = logits(model)
    adapter = S0Adapter(model)
    assert all(p.dtype == torch.float32 and not p.any() and p.requires_grad for p in adapter.parameters())
    with adapter.active():
        assert torch.allclose(logits(model), base, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
@pytest.mark.parametrize("cls", [S0Adapter, StateOffsetAdapter])
def test_active_adapter_changes_logits_and_every_state_gets_gradient(family, cls):
    """PITFALLS: silent no-ops are the main risk. Both effects must be visible, on every selected layer."""
    model = tiny(family)
    base = logits(model)
    adapter = fill(cls(model, alpha=0.5), SCALE[family])
    with adapter.active():
        assert (logits(model) - base).abs().max() > 1e-4
        with adapter.train_mode():
            (model(input_ids=IDS).logits ** 2).mean().backward()
    for name, p in adapter.named_parameters().items():
        assert p.grad is not None and p.grad.abs().max() > 0, name
    assert torch.equal(logits(model), base)  # inactive again: exactly the base model


@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
def test_layer_subset_only_those_layers_get_a_state(family):
    """Table 5's ablation: positions count recurrent layers only; unselected layers run from the zero state
    (no tensor, no gradient, no injection)."""
    model = tiny(family)
    adapter = fill(S0Adapter(model, layers=[0, 2]))
    idx = [r.index for r in recurrent_layers(model)]
    assert [r.index for r in adapter.layers] == [idx[0], idx[2]]
    seen = []

    def spy(*args, **kwargs):
        call = inj._CURRENT.get()
        seen.append(
            call is not None and kwargs.get("initial_state", kwargs.get("initial_states")) is not None
        )
        return original(*args, **kwargs)

    name = "torch_chunk_gated_delta_rule" if family == "qwen3_5" else "mamba2_chunk_scan"
    module = __import__(type(adapter.layers[0].module).__module__, fromlist=["_"])
    original = inj.pytorch_kernel(module, name)  # CPU tensors: never fla / mamba-ssm
    with inj.override_kernel(name, spy), adapter.active(), adapter.train_mode():
        model(input_ids=IDS).logits.pow(2).mean().backward()
    assert seen == [i in (idx[0], idx[2]) for i in idx]
    assert all(p.grad.abs().max() > 0 for p in adapter.parameters())
    with pytest.raises(AdapterError, match="out of range"):
        S0Adapter(model, layers=[len(idx)])


@pytest.mark.parametrize("mode", ["inference", "train_and_inference", "normalized"])
def test_alpha_modes_inject_their_formula(mode):
    """What reaches the kernel, for each mode, in training and at inference."""
    model = tiny("qwen3_5")
    adapter = fill(S0Adapter(model, alpha=0.07, alpha_mode=mode, layers=[0]))
    s = adapter.states[str(adapter.layers[0].index)].detach()
    expected = {
        ("inference", True): s,
        ("inference", False): 0.07 * s,
        ("train_and_inference", True): 0.07 * s,
        ("train_and_inference", False): 0.07 * s,
        ("normalized", True): s,
        ("normalized", False): 0.07 * s / s.norm(),
    }
    got = []

    def spy(*args, **kwargs):
        if inj._CURRENT.get() is not None:
            got.append(kwargs["initial_state"][0].detach())
        return original(*args, **kwargs)

    import transformers.models.qwen3_5.modeling_qwen3_5 as mq

    original = inj.pytorch_kernel(mq, "torch_chunk_gated_delta_rule")
    for training in (True, False):
        got.clear()
        with (
            inj.override_kernel("torch_chunk_gated_delta_rule", spy),
            adapter.active(),
            adapter.train_mode(training),
        ):
            logits(model)
            injected = adapter.injected(adapter.layers[0].index)
        assert len(got) == 1
        assert torch.allclose(got[0], expected[(mode, training)], rtol=1e-6, atol=0)
        assert torch.allclose(injected, expected[(mode, training)], rtol=1e-6, atol=0)


def test_alpha_default_and_normalised_zero_state():
    assert DEFAULT_ALPHA_MODE == "inference" == S0Config().alpha_mode == MethodConfig().alpha_mode
    z = torch.zeros(2, 3, 4)
    assert not scaled_state(z, 0.5, "normalized", training=False).isnan().any()


@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
@pytest.mark.parametrize("cls", [S0Adapter, StateOffsetAdapter])
def test_save_reload_into_fresh_model_gives_identical_logits(tmp_path, family, cls):
    model = tiny(family)
    adapter = fill(cls(model, alpha=0.65, alpha_mode="normalized", layers=[0, 1]), SCALE[family])
    with adapter.active():
        expected = logits(model)
    adapter.save(tmp_path, extra_meta={"train": {"lr": 1e-3, "steps": 20}, "data_hash": "abc123"})
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    assert meta["s0_method"] == cls.method
    assert meta["alpha"] == 0.65 and meta["alpha_mode"] == "normalized"
    assert meta["layer_indices"] == [r.index for r in adapter.layers]
    assert all(v == list(adapter.layers[0].state_shape) for v in meta["state_shapes"].values())
    assert meta["model"]["model_type"] == model.config.model_type
    assert meta["extra_meta"]["data_hash"] == "abc123" and meta["extra_meta"]["train"]["steps"] == 20
    fresh = tiny(family)
    loaded = load_adapter(tmp_path, fresh)
    assert type(loaded) is cls and loaded.config == adapter.config
    with loaded.active():
        assert torch.equal(logits(fresh), expected)


def test_default_alpha_mode_recorded_in_sidecar(tmp_path):
    S0Adapter(tiny("falcon_h1")).save(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["alpha_mode"] == "inference"


def test_loading_into_another_architecture_fails_clearly(tmp_path):
    S0Adapter(tiny("qwen3_5")).save(tmp_path)
    with pytest.raises(AdapterError, match="model_type='qwen3_5_text'"):
        load_adapter(tmp_path, tiny("falcon_h1"))
    with pytest.raises(AdapterError, match="expects recurrent layers"):
        load_adapter(tmp_path, tiny("qwen3_5", linear_value_head_dim=16))  # same type, other state shape
    with pytest.raises(AdapterError, match="not 'state_offset'"):
        StateOffsetAdapter.load(tmp_path, tiny("qwen3_5"))


def test_activate_deactivate_swap_never_touch_weights(tmp_path):
    """Task switching on one loaded model: swap trained state sets in place, no reload, weights unchanged."""
    model = tiny("qwen3_5")
    checksum = weights_checksum(model)
    base = logits(model)
    a = fill(S0Adapter(model, alpha=0.5), seed=1)
    b = fill(S0Adapter(model, alpha=0.5), seed=2)
    with a.active():
        la = logits(model)
    with b.active():
        lb = logits(model)
    b.save(tmp_path / "b")
    params_before = [id(p) for p in a.parameters()]
    with a.active():
        a.swap(b.state_dict())  # while active: takes effect on the next forward
        assert torch.equal(logits(model), lb)
        a.swap(tmp_path / "b")  # from a saved directory
        assert torch.equal(logits(model), lb)
        a.swap(fill(S0Adapter(model), seed=1).state_dict())
        assert torch.equal(logits(model), la)
    assert [id(p) for p in a.parameters()] == params_before
    assert torch.equal(logits(model), base)
    assert weights_checksum(model) == checksum
    assert not any(r.module._forward_pre_hooks or r.module._forward_hooks for r in recurrent_layers(model))
    with pytest.raises(AdapterError, match="trained on other layers"):
        a.swap({"s0.0": torch.zeros(4, 16, 8)})


def test_only_one_state_adapter_active_per_model():
    model = tiny("falcon_h1")
    a, b = S0Adapter(model), StateOffsetAdapter(model)
    with a.active(), pytest.raises(AdapterError, match="another state adapter is active"):
        b.activate()
    with b.active():
        pass


def test_build_adapter_takes_a_whole_method_config():
    model = tiny("falcon_h1")
    fields = {k: v for k, v in dataclasses.asdict(MethodConfig(name="s0", alpha=0.65, layers=[1])).items()}
    adapter = build_adapter("s0", model, seed=3, **fields)
    assert isinstance(adapter, S0Adapter) and adapter.config.alpha == 0.65 and len(adapter.layers) == 1
    assert isinstance(build_adapter("state_offset", model), StateOffsetAdapter)
    assert isinstance(build_adapter("baseline", model), NullAdapter)
    with pytest.raises(AdapterError, match="unknown field"):
        build_adapter("s0", model, alpah=0.5)
    with pytest.raises(AdapterError, match="unknown method"):
        build_adapter("ia3", model)
