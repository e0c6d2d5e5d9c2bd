"""S0's size per recurrence kind (issue 15): for one real architecture of each kind, the count read off the
meta-device build (s0.adapters.kinds.state_count, printed by scripts/state_counts.py) equals the number worked out by
hand here from the fields of its conf/model/*.yaml; where the paper states a count, it is asserted too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("state_counts", ROOT / "scripts" / "state_counts.py")
state_counts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(state_counts)


def arch(name: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text())["arch"]


def millions(n: int) -> float:
    """The paper prints state sizes in millions to one decimal ("12.6M")."""
    return round(n / 1e6, 1)


def test_gdn_qwen3_5_4b():
    a, c = arch("qwen3_5_4b"), state_counts.count("qwen3_5_4b")
    # Qwen3.5 repeats [GDN, GDN, GDN, attention] (full_attention_interval 4): 32 layers -> 32 * 3 / 4 = 24 GDN.
    layers = a["num_hidden_layers"] * 3 // 4
    # GDN state per layer: value heads x key head dim x value head dim = 32 x 128 x 128 = 524,288
    per_layer = a["linear_num_value_heads"] * a["linear_key_head_dim"] * a["linear_value_head_dim"]
    assert (layers, per_layer, layers * per_layer) == (24, 524_288, 12_582_912)
    assert c.kinds == ("gdn",) and c.n_layers == layers and c.shapes == ((32, 128, 128),)
    assert c.total == layers * per_layer
    # Paper Sec 4.1 (and the abstract): 24 GDN layers, 32 x 128 x 128 each, "12.6M state parameters (0.3% of the
    # model)"; App B (Table 5): the early layers 0-7 alone are "4.2M".
    assert millions(c.total) == 12.6
    assert round(100 * c.total / c.model_params, 1) == 0.3
    assert millions(8 * per_layer) == 4.2


def test_gdn_qwen3_5_scaling_sizes_match_appendix_h():
    # Paper App H, scaling table: GDN layers and state of each Qwen3.5 size.
    paper = {
        "qwen3_5_0_8b": (18, 4.7),
        "qwen3_5_2b": (18, 4.7),
        "qwen3_5_4b": (24, 12.6),
        "qwen3_5_9b": (24, 12.6),
    }
    for name, (layers, state_m) in paper.items():
        a, c = arch(name), state_counts.count(name)
        hand = (a["num_hidden_layers"] * 3 // 4) * (
            a["linear_num_value_heads"] * a["linear_key_head_dim"] * a["linear_value_head_dim"]
        )
        assert (c.n_layers, c.total) == (layers, hand), name
        assert millions(c.total) == state_m, name


def test_mamba2_falcon_h1_7b():
    a, c = arch("falcon_h1_7b"), state_counts.count("falcon_h1_7b")
    # FalconH1: a Mamba-2 mixer in every layer; state per layer: heads x head dim x d_state = 24 x 128 x 256
    layers = a["num_hidden_layers"]
    per_layer = a["mamba_n_heads"] * a["mamba_d_head"] * a["mamba_d_state"]
    assert (layers, per_layer, layers * per_layer) == (44, 786_432, 34_603_008)
    assert c.kinds == ("mamba2",) and c.n_layers == layers and c.shapes == ((24, 128, 256),)
    assert c.total == layers * per_layer
    # Paper Sec 4.1: "totaling 34.6M state parameters (0.5%)"; Table 1 footnote: 44 Mamba-2 layers.
    assert millions(c.total) == 34.6
    assert round(100 * c.total / c.model_params, 1) == 0.5


def test_mamba2_falcon_h1_1_5b():
    a, c = arch("falcon_h1_1_5b"), state_counts.count("falcon_h1_1_5b")
    # 24 layers x (48 heads x 64 head dim x 256 d_state = 786,432) = 18,874,368 (no paper value: not in the paper)
    hand = a["num_hidden_layers"] * a["mamba_n_heads"] * a["mamba_d_head"] * a["mamba_d_state"]
    assert hand == 18_874_368
    assert a["mamba_n_heads"] * a["mamba_d_head"] == a["mamba_d_ssm"]  # the SSM width the mixer is built with
    assert (c.kinds, c.n_layers, c.shapes, c.total) == (("mamba2",), 24, ((48, 64, 256),), hand)


def test_mamba1_mamba_2_8b():
    a, c = arch("mamba_2_8b"), state_counts.count("mamba_2_8b")
    # Mamba-1: a mixer in every layer; diagonal state per layer: d_inner x d_state, d_inner = expand x hidden
    d_inner = a["expand"] * a["hidden_size"]  # 2 x 2560 = 5120
    hand = a["num_hidden_layers"] * d_inner * a["state_size"]  # 64 x 5120 x 16
    assert (d_inner, hand) == (5120, 5_242_880)
    assert (c.kinds, c.n_layers, c.shapes, c.total) == (("mamba1",), 64, ((5120, 16),), hand)


def test_mamba1_falcon_mamba_7b():
    a, c = arch("falcon_mamba_7b"), state_counts.count("falcon_mamba_7b")
    # config.json gives intermediate_size 8192 beside expand 16: the explicit d_inner wins (16 x 4096 would be 65536)
    assert a["intermediate_size"] == 8192 != a["expand"] * a["hidden_size"]
    hand = a["num_hidden_layers"] * a["intermediate_size"] * a["state_size"]  # 64 x 8192 x 16
    assert hand == 8_388_608
    assert (c.kinds, c.n_layers, c.shapes, c.total) == (("mamba1",), 64, ((8192, 16),), hand)


def test_gdn_qwen3_next_80b_a3b():
    a, c = arch("qwen3_next_80b_a3b"), state_counts.count("qwen3_next_80b_a3b")
    # Qwen3-Next repeats [GDN, GDN, GDN, attention] (full_attention_interval 4): 48 layers -> 48 * 3 / 4 = 36 GDN.
    layers = a["num_hidden_layers"] * 3 // 4
    # GDN state per layer: value heads x key head dim x value head dim = 32 x 128 x 128 = 524,288, as Qwen3.5-4B's
    per_layer = a["linear_num_value_heads"] * a["linear_key_head_dim"] * a["linear_value_head_dim"]
    assert (layers, per_layer, layers * per_layer) == (36, 524_288, 18_874_368)
    assert (c.kinds, c.n_layers, c.shapes, c.total) == (("gdn",), 36, ((32, 128, 128),), layers * per_layer)
    # 80B parameters in all (the name's), so S0 is 0.02% of the model
    assert round(c.model_params / 1e9) == 80 and round(100 * c.total / c.model_params, 2) == 0.02


def test_mamba1_jamba_1_5_mini():
    a, c = arch("jamba_1_5_mini"), state_counts.count("jamba_1_5_mini")
    # 32 layers; layer i is attention when i % attn_layer_period (8) == attn_layer_offset (4): 4, 12, 20, 28
    attention = [
        i for i in range(a["num_hidden_layers"]) if i % a["attn_layer_period"] == a["attn_layer_offset"]
    ]
    assert attention == [4, 12, 20, 28]
    layers = a["num_hidden_layers"] - len(attention)  # 28 Mamba-1 layers
    # Mamba-1: diagonal state per layer d_inner x d_state, d_inner = mamba_expand x hidden = 2 x 4096 = 8192
    d_inner = a["mamba_expand"] * a["hidden_size"]
    per_layer = d_inner * a["mamba_d_state"]
    assert (layers, d_inner, per_layer, layers * per_layer) == (28, 8192, 131_072, 3_670_016)
    assert (c.kinds, c.n_layers, c.shapes, c.total) == (("mamba1",), 28, ((8192, 16),), layers * per_layer)
    assert round(c.model_params / 1e9) == 52  # "52B total parameters"


def test_kda_kimi_linear_48b():
    a, c = arch("kimi_linear_48b"), state_counts.count("kimi_linear_48b")
    # 27 layers; config.json's full_attn_layers (1-indexed) [4, 8, 12, 16, 20, 24, 27] are MLA -> 27 - 7 = 20 KDA
    mla = [i + 1 for i, t in enumerate(a["layer_types"]) if t == "full_attention"]
    assert mla == [4, 8, 12, 16, 20, 24, 27]
    layers = a["num_hidden_layers"] - len(mla)
    # KDA state per layer: heads x head dim (keys) x head dim (values) = 32 x 128 x 128 = 524,288
    per_layer = a["linear_num_heads"] * a["linear_head_dim"] * a["linear_head_dim"]
    assert (layers, per_layer, layers * per_layer) == (20, 524_288, 10_485_760)
    assert (c.kinds, c.n_layers, c.shapes, c.total) == (("kda",), 20, ((32, 128, 128),), layers * per_layer)


def test_rglru_recurrentgemma_2b():
    a, c = arch("recurrentgemma_2b"), state_counts.count("recurrentgemma_2b")
    # 26 layers cycling [recurrent, recurrent, attention]: 8 full cycles (16 recurrent) + [recurrent, recurrent]
    pattern = a["block_types"]
    layers = sum(pattern[i % len(pattern)] == "recurrent" for i in range(a["num_hidden_layers"]))
    assert layers == 8 * 2 + 2 == 18
    # RG-LRU: a diagonal vector state of lru_width = 2560 per recurrent layer
    assert layers * a["lru_width"] == 46_080
    assert (c.kinds, c.n_layers, c.shapes, c.total) == (("rglru",), 18, ((2560,),), layers * a["lru_width"])


def test_pure_transformer_has_no_state():
    c = state_counts.count("qwen2_5_3b_instruct")
    assert (c.kinds, c.n_layers, c.total) == ((), 0, 0)


def test_command_prints_each_named_model(capsys):
    assert state_counts.main(["mamba_2_8b", "tiny_recurrent_gemma"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["model", "family", "kind"]
    assert out[1].split()[:7] == ["mamba_2_8b", "mamba", "mamba1", "64", "5120x16", "81,920", "5,242,880"]
    assert out[2].split()[:7] == ["tiny_recurrent_gemma", "recurrent_gemma", "rglru", "2", "32", "32", "64"]


def test_command_unknown_name_is_one_line(capsys):
    assert state_counts.main(["no_such_model"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_model" in err and "mamba_2_8b" in err


@pytest.mark.parametrize(
    "name",
    [
        "mamba_2_8b",
        "falcon_mamba_7b",
        "recurrentgemma_2b",
        "kimi_linear_48b",
        "falcon_h1_1_5b",
        "qwen3_next_80b_a3b",
        "jamba_1_5_mini",
    ],
)
def test_new_entries_point_to_their_kinds_tiny_model(name):
    cfg = yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text())
    tiny = yaml.safe_load((ROOT / "conf" / "model" / f"{cfg['tiny']}.yaml").read_text())
    assert state_counts.count(cfg["tiny"]).kinds == state_counts.count(name).kinds
    assert cfg["lora_targets"] and tiny["lora_targets"]


@pytest.mark.parametrize(
    "name",
    [
        "recurrentgemma_2b",
        "tiny_recurrent_gemma",
        "kimi_linear_48b",
        "mamba_2_8b",
        "qwen3_next_80b_a3b",
        "jamba_1_5_mini",
    ],
)
def test_config_layer_count_equals_the_built_model(name):
    """`n_recurrent_layers` (config only, used to validate method.layers) agrees with the meta-device build; it
    once counted every RecurrentGemma block (26) instead of its 18 RG-LRU blocks."""
    from s0.adapters.kinds import recurrent_layers
    from s0.models import TINY_ARCH, build_model, n_recurrent_layers

    entry = yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text())
    spec = entry["arch"] or TINY_ARCH[entry["family"]]
    built = recurrent_layers(build_model(entry["family"], spec, weights="meta"))
    assert n_recurrent_layers(entry["family"], entry["arch"]) == len(built)
