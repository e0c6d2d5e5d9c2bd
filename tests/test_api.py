"""s0.api, S0 as a library: get_s0_model on the tiny Qwen3.5 (GatedDeltaNet) and FalconH1 (Mamba-2) models, a
few optimizer steps that change the logits, disable_adapter giving the base back bit for bit, save_pretrained /
from_pretrained bit-identical on a fresh base, loads onto another architecture refused in one line, generate
equal to the harness's adapter-active generation, an unsupported model refused naming the kinds, and the README's
library example executed as written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from s0 import S0Config, S0Model, get_s0_model, supported_kinds
from s0.adapters import AdapterError, S0Adapter, StateOffsetAdapter, StateOffsetConfig, load_adapter
from s0.adapters import injection as inj
from s0.generation import GenerationSpec, eos_ids, generate_ids
from s0.models import TINY_ARCH, build_model, tiny_tokenizer

inj.install_known()  # on a machine with fla / mamba-ssm, CPU tensors must not reach their CUDA kernels
pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
IDS = torch.tensor([[5, 77, 130, 9, 201, 18, 66, 240, 12, 99, 31, 7]])
PROMPT = 6  # the first 6 tokens are the prompt of the toy completion loss
SCALE = {
    "qwen3_5": 1.0,
    "falcon_h1": 30.0,
}  # Mamba-2 forgets fast in the random tiny model (as test_adapters)


def tiny(family: str, **arch):
    return build_model(family, {**TINY_ARCH[family], **arch})


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def train_a_little(model: S0Model, steps: int = 3) -> None:
    """A toy completion loss (prompt tokens masked), Adam on the wrapper's trainable tensors."""
    labels = IDS.clone()
    labels[:, :PROMPT] = -100
    opt = torch.optim.Adam(model.trainable_parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        model(input_ids=IDS, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def fill(model: S0Model, scale: float, seed: int = 0) -> S0Model:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return model


def test_import_s0_stays_light():
    """The CLI imports s0 on every start: the library names load torch only when first used."""
    code = "import s0, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
def test_training_changes_logits_and_disable_adapter_restores_the_base(family):
    base_model = tiny(family)
    base = logits(base_model)
    model = get_s0_model(base_model, S0Config(alpha=1.0))
    assert isinstance(model.adapter, S0Adapter) and model.adapter.is_active
    assert all(not p.requires_grad for p in model.base_model.parameters())
    assert torch.equal(logits(model), base)  # zero-initialised: exactly the base model
    train_a_little(model)
    assert not model.base_model.training  # train() kept the frozen base in eval mode (FalconH1's fused path)
    adapted = logits(model)
    assert (adapted - base).abs().max() > 1e-6
    with model.disable_adapter():
        assert torch.equal(logits(model), base)
    assert torch.equal(logits(model), adapted)  # back on after the block
    assert torch.equal(logits(model.unwrap()), base)  # unwrapped: the base model, no hook left
    with pytest.raises(AdapterError, match="unwrapped"):
        model(input_ids=IDS)


@pytest.mark.parametrize(
    ("family", "method"), [("qwen3_5", "s0"), ("falcon_h1", "s0"), ("qwen3_5", "state_offset")]
)
def test_save_pretrained_from_pretrained_is_bit_identical(tmp_path, family, method):
    model = fill(get_s0_model(tiny(family), S0Config(alpha=0.5, method=method)), SCALE[family])
    expected = logits(model)
    assert (expected - logits(tiny(family))).abs().max() > 1e-4
    model.save_pretrained(tmp_path / "s0")
    sidecar = json.loads((tmp_path / "s0" / "adapter_config.json").read_text())
    assert sidecar["s0_method"] == method and "base_model_name_or_path" in sidecar["extra_meta"]
    assert len(sidecar["extra_meta"]["base_config_hash"]) == 16

    again = S0Model.from_pretrained(tiny(family), tmp_path / "s0")
    assert torch.equal(logits(again), expected)
    assert again.s0_config == model.s0_config
    assert not again.trainable_parameters()  # loaded for inference unless is_trainable=True
    assert S0Model.from_pretrained(tiny(family), tmp_path / "s0", is_trainable=True).trainable_parameters()
    # the harness's own loader reads it: one save format
    harness = load_adapter(tmp_path / "s0", tiny(family))
    assert type(harness) is {"s0": S0Adapter, "state_offset": StateOffsetAdapter}[method]
    harness.save(tmp_path / "runner")  # and the reverse: a runner's adapter/ (no config hash) loads here
    assert torch.equal(logits(S0Model.from_pretrained(tiny(family), tmp_path / "runner")), expected)


def test_loading_onto_another_architecture_is_refused_in_one_line(tmp_path):
    get_s0_model(tiny("qwen3_5")).save_pretrained(tmp_path / "s0")
    with pytest.raises(AdapterError, match="model_type") as err:
        S0Model.from_pretrained(tiny("falcon_h1"), tmp_path / "s0")
    assert "\n" not in str(err.value)
    # Same model type and recurrent layer shapes, another MLP width: only the config hash tells them apart.
    wider = tiny("qwen3_5", intermediate_size=96)
    with pytest.raises(AdapterError, match="intermediate_size 128 -> 96") as err:
        S0Model.from_pretrained(wider, tmp_path / "s0")
    assert "\n" not in str(err.value) and "check_config=False" in str(err.value)
    S0Model.from_pretrained(wider, tmp_path / "s0", check_config=False)
    with pytest.raises(AdapterError, match="supported kinds"):
        S0Model.from_pretrained(tiny("qwen2"), tmp_path / "s0")


def test_unsupported_model_gets_one_line_naming_the_supported_kinds():
    with pytest.raises(AdapterError) as err:
        get_s0_model(tiny("qwen2"))
    message = str(err.value)
    assert "\n" not in message and "Qwen2ForCausalLM" in message
    assert supported_kinds() and all(kind in message for kind in supported_kinds())
    assert {k.split()[0] for k in supported_kinds()} >= {"gdn", "mamba2"}


def test_a_harness_config_picks_its_method():
    model = get_s0_model(tiny("qwen3_5"), StateOffsetConfig(alpha=0.3, layers=[0, 2]))
    assert isinstance(model.adapter, StateOffsetAdapter) and model.s0_config.method == "state_offset"
    assert [r.index for r in model.adapter.layers] == [0, 2]
    with pytest.raises(AdapterError, match="method"):
        S0Config(method="lora")


@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
def test_generate_differs_from_the_base_and_equals_the_harness_generation(tmp_path, family):
    """Untied heads: with the tiny models' tied embeddings, greedy decoding just repeats the last prompt token."""
    tok = tiny_tokenizer()
    prompts = ["def add(a, b):\n", "x = "]  # longest first: the harness keeps this order in its batch
    model = fill(get_s0_model(tiny(family, tie_word_embeddings=False), S0Config(alpha=0.5)), SCALE[family])
    model.save_pretrained(tmp_path / "s0")
    batch = tok(prompts, return_tensors="pt", padding=True)  # left padding (the tiny tokenizer's side)
    kwargs = dict(
        max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=eos_ids(model, tok)
    )
    kwargs |= dict(output_scores=True, return_dict_in_generate=True)
    width = batch["input_ids"].shape[1]
    ours = model.generate(**batch, **kwargs)
    with model.disable_adapter():
        plain = model.generate(**batch, **kwargs)
    assert (ours.scores[0] - plain.scores[0]).abs().max() > 1e-4  # the state reached generation's prefill
    if family == "qwen3_5":  # the Mamba-2 tiny model forgets too fast for the greedy tokens to move
        assert ours.sequences.tolist() != plain.sequences.tolist()

    fresh = tiny(family, tie_word_embeddings=False)
    adapter = load_adapter(tmp_path / "s0", fresh)
    with adapter.active():
        theirs = generate_ids(
            fresh, tok, prompts, GenerationSpec(max_new_tokens=6, engine="hf"), progress=False
        )
    assert ours.sequences[:, width:].tolist() == [rows[0] for rows in theirs]


def test_readme_library_example_runs_as_written(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- library-example[^>]*-->\n```python\n(.*?)```", readme, re.DOTALL)
    assert found, "README: no fenced block after a '<!-- library-example -->' marker"
    monkeypatch.chdir(tmp_path)
    exec(compile(found.group(1), "README.md", "exec"), {"__name__": "readme_example"})
    assert (tmp_path / "my_s0" / "adapter_model.safetensors").exists()
    assert "trainable" in capsys.readouterr().out
