"""Sec 6 analyses: known answers on synthetic cases, documented shapes on the tiny models with the real
S0Adapter, and the records round trip (write_analysis -> load_analyses -> the Sec 6 table)."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pandas as pd
import pytest
import torch

from s0.adapters import S0Adapter
from s0.adapters.kinds import recurrent_layers
from s0.models import TINY_ARCH, build_model, tiny_tokenizer
from s0.run import mechanism as an

PROMPTS = ["def add(a, b):\n", "Write a function that reverses a list.", "x = 1\ny ="]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run faster single-threaded on a shared 2-core machine
    yield
    torch.set_num_threads(n)


@functools.cache
def tiny(family: str):
    # init 0.3: greedy tokens depend on the recurrent state (tests/test_injection.py explains why)
    return build_model(family, {**TINY_ARCH[family], "initializer_range": 0.3})


def random_s0(model, scale: float = 1.0, seed: int = 0) -> S0Adapter:
    adapter = S0Adapter(model, alpha=1.0)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return adapter


# ------------------------------------------------------------------------------------------- divergence
def test_first_difference() -> None:
    assert an.first_difference("abc", "abc") is None
    assert an.first_difference("abc", "xbc") == 0
    assert an.first_difference("return x", "return y") == 7
    assert an.first_difference("ab", "abcd") == 2


class FirstTokenModel(torch.nn.Module):
    """A greedy 'LM' whose continuation is fixed; while its state is on, only the first new token changes."""

    def __init__(self, tok, text: str = "return x + 1\n"):
        super().__init__()
        self.tok, self.text, self.state_on = tok, text, False
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = None

    def generate(self, input_ids, attention_mask=None, max_new_tokens=16, **_):
        cont = self.tok(self.text, add_special_tokens=False)["input_ids"][:max_new_tokens]
        if self.state_on:
            cont = self.tok("R", add_special_tokens=False)["input_ids"] + cont[1:]
        new = torch.tensor([cont] * input_ids.shape[0])
        return torch.cat([input_ids, new], dim=1)


class SwitchAdapter:
    """The stand-in interface the analyses need: active() / inactive() context managers."""

    def __init__(self, model):
        self.model = model

    @contextlib.contextmanager
    def active(self):
        prev, self.model.state_on = self.model.state_on, True
        yield self
        self.model.state_on = prev

    @contextlib.contextmanager
    def inactive(self):
        prev, self.model.state_on = self.model.state_on, False
        yield self
        self.model.state_on = prev


def test_a_state_that_changes_only_the_first_token_diverges_at_position_0() -> None:
    tok = tiny_tokenizer()
    model = FirstTokenModel(tok)
    adapter = SwitchAdapter(model)
    base = an.greedy_completions(model, tok, adapter, PROMPTS, max_new_tokens=16, tuned=False)
    tuned = an.greedy_completions(model, tok, adapter, PROMPTS, max_new_tokens=16, tuned=True)
    assert base[0] == "return x + 1\n" and tuned[0] == "Return x + 1\n"
    ids = [f"p{i}" for i in range(len(PROMPTS))]
    d = an.divergence(
        pd.DataFrame({"id": ids, "completion": base, "correct": False}),
        pd.DataFrame({"id": ids, "completion": tuned, "correct": True}),
    )
    assert list(d.flips.position) == [0, 0, 0] and d.summary()["share_pos0_pct"] == 100.0
    assert d.sign_test.pvalue == pytest.approx(0.5**3)  # one-sided sign test, all inside the first 10%


def test_divergence_counts_only_fail_to_pass_flips_and_reproduces_sec_6_3() -> None:
    base = pd.DataFrame(
        {"id": ["a", "b", "c"], "completion": ["xx", "yy", "zz"], "correct": [False, True, False]}
    )
    tuned = pd.DataFrame(
        {"id": ["a", "b", "c"], "completion": ["xy", "yz", "zz"], "correct": [True, False, True]}
    )
    d = an.divergence(base, tuned)
    assert list(d.flips.id) == ["a"] and d.identical == 1  # b is PASS-to-FAIL, c has equal texts
    # The paper's 27 flips: 23 at 0 and 4 at 16/28/32/36 of long completions -> p = 0.5**27 < 1e-8.
    pos = [0] * 23 + [16, 28, 32, 36]
    lengths = [300] * 23 + [312, 546, 624, 702]
    b = pd.DataFrame({"id": range(27), "completion": ["a" * n for n in lengths], "correct": False})
    t = pd.DataFrame({"id": range(27), "completion": ["a" * p + "b" * (n - p) for p, n in zip(pos, lengths)],
                      "correct": True})  # fmt: skip
    s = an.divergence(b, t).summary()
    assert (s["n_flips"], s["n_pos0"], s["n_first_window"]) == (27, 23, 27)
    assert round(s["share_pos0_pct"]) == 85 and f"{s['mean_rel_position_pct']:.2f}" == "0.76"
    assert s["sign_test_p"] == pytest.approx(0.5**27) and s["sign_test_p"] < 1e-8


# ------------------------------------------------------------------------------------------ persistence
@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
def test_persistence_shapes_on_tiny_models_with_the_real_adapter(family: str) -> None:
    model, tok = tiny(family), tiny_tokenizer()
    adapter = random_s0(model)
    p = an.persistence(model, tok, adapter, PROMPTS)
    lengths = [len(tok(x, add_special_tokens=False)["input_ids"]) for x in PROMPTS]
    assert list(p.per_position.columns) == ["prompt", "position", "rel_position", "kl", "kl_ratio"]
    assert len(p.per_position) == sum(lengths)
    first = p.per_position.groupby("prompt").head(1)
    assert (first.kl > 0).all() and np.allclose(first.kl_ratio, 1.0)
    assert (p.per_position.kl >= 0).all() and np.isfinite(p.final_ratio)
    assert not adapter.is_active  # the analysis leaves the adapter as it found it


def test_persistence_is_zero_for_a_zero_state_and_works_with_a_stand_in() -> None:
    model, tok = tiny("qwen3_5"), tiny_tokenizer()
    zero = S0Adapter(model, alpha=1.0)  # freshly initialised: S0 = 0, identical to the base model
    p = an.persistence(model, tok, zero, PROMPTS[:1])
    assert p.per_position.kl.abs().max() < 1e-10 and np.isnan(p.final_ratio)

    class Scaled:  # a stand-in: "tuned" = a random state switched on by active(), nothing else
        def __init__(self):
            self.inner = random_s0(model, seed=3)

        def active(self):
            return self.inner.active()

        def inactive(self):
            return self.inner.inactive()

    q = an.persistence(model, tok, Scaled(), PROMPTS[:1])
    assert q.per_position.kl.iloc[0] > 0


# ------------------------------------------------------------------------------------------------ probe
@pytest.mark.parametrize("family", ["qwen3_5", "falcon_h1"])
def test_probe_features_read_every_recurrent_state_and_layer(family: str) -> None:
    model, tok = tiny(family), tiny_tokenizer()
    f = an.probe_features(model, tok, PROMPTS)
    rec = recurrent_layers(model)
    assert sorted(f.recurrent) == [r.index for r in rec]
    for r in rec:
        assert f.recurrent[r.index].shape == (len(PROMPTS), r.numel)
    assert sorted(f.residual) == list(range(model.config.num_hidden_layers))
    assert all(x.shape == (len(PROMPTS), model.config.hidden_size) for x in f.residual.values())
    # The state read from the cache is the state after the last prompt token: a longer prompt changes it.
    g = an.probe_features(model, tok, [p + " more" for p in PROMPTS])
    assert not np.allclose(f.recurrent[rec[0].index], g.recurrent[rec[0].index])


def test_probe_finds_the_informative_layer_with_pca_fit_inside_each_fold() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40), np.ones(40)].astype(int)
    signal = rng.normal(size=(80, 300))
    signal[:, :5] += 3.0 * y[:, None]  # linearly separable along a few directions
    noise = rng.normal(size=(80, 300))
    feats = an.ProbeFeatures(
        recurrent={0: noise, 3: signal}, residual={0: noise[:, :50], 1: noise[:, 50:120]}
    )
    r = an.probe(feats, y, n_components=64, folds=5)
    assert list(r.per_layer.columns) == [
        "source",
        "layer",
        "auc",
        "auc_std",
        "folds",
        "n",
        "n_positive",
        "dims",
    ]
    assert len(r.per_layer) == 4 and r.best["recurrent"]["layer"] == 3
    assert r.best["recurrent"]["auc"] > 0.95 and r.per_layer.auc.min() < 0.75
    assert (r.per_layer.dims <= 63).all()  # capped by the 64 training problems of each fold
    one_class = an.probe(feats, np.zeros(80, dtype=int))
    assert one_class.per_layer.auc.isna().all() and one_class.best == {}


# ---------------------------------------------------------------------------------- the whole mechanism
def test_mechanism_on_tiny_model_writes_records_the_sec6_table_reads(tmp_path) -> None:
    from s0.report.tables_appendix import table_sec6
    from s0.run.records import Results, load_results
    from tests.test_tables import write_run

    model, tok = tiny("qwen3_5"), tiny_tokenizer()
    adapter = random_s0(model, seed=1)
    prompts = [f"def f{i}(x):\n    return x * {i}" for i in range(12)]
    labels = np.array([i % 2 for i in range(12)])
    pers = an.persistence(model, tok, adapter, prompts[:3])
    probe = an.probe(an.probe_features(model, tok, prompts), labels, folds=3)
    base = an.greedy_completions(model, tok, adapter, prompts, max_new_tokens=6, tuned=False)
    tuned = an.greedy_completions(model, tok, adapter, prompts, max_new_tokens=6, tuned=True)
    ids = [f"HumanEval/{80 + i}" for i in range(12)]
    div = an.divergence(pd.DataFrame({"id": ids, "completion": base, "correct": False}),
                        pd.DataFrame({"id": ids, "completion": tuned, "correct": True}))  # fmt: skip
    assert len(div.flips) + div.identical == 12  # every problem is a flip here: each has a position or none
    out = an.write_analysis(tmp_path / "run_s0", meta={"baseline_run": "run_b"}, persistence=pers,
                            divergence=div, probe=probe)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "divergence.csv",
        "persistence.csv",
        "probe.csv",
        "summary.json",
    ]
    a = an.load_analyses(tmp_path)
    assert set(a.analysis) == {"persistence", "divergence", "probe"} and set(a.run_id) == {"run_s0"}
    assert len(an.load_detail(tmp_path, "probe")) == len(probe.per_layer) == 6 + 8
    # the table reads analyses only of the mechanism S0 runs among the records (never another model's)
    assert (
        table_sec6(Results(pd.DataFrame(), pd.DataFrame()), analyses=a)
        .cell("KL ratio at the last prompt token", "Value")
        .n
        == 0
    )
    write_run(tmp_path / "runs", "run_b", "mechanism", "baseline", "qwen3_5_4b", 50.0)
    write_run(tmp_path / "runs", "run_s0", "mechanism", "s0", "qwen3_5_4b", 70.0)
    t = table_sec6(load_results(tmp_path / "runs"), analyses=a)
    assert t.cell("KL ratio at the last prompt token", "Value").n == 1
    assert "layer" in t.cell("Probe AUC, recurrent state", "Value").ours()
